/**
 * Errors raised by the ONNX Runtime binding.
 *
 * @module
 */

/** `OrtErrorCode` names, indexed by their numeric value. */
export const ORT_ERROR_CODES = [
  "OK",
  "FAIL",
  "INVALID_ARGUMENT",
  "NO_SUCHFILE",
  "NO_MODEL",
  "ENGINE_ERROR",
  "RUNTIME_EXCEPTION",
  "INVALID_PROTOBUF",
  "MODEL_LOADED",
  "NOT_IMPLEMENTED",
  "INVALID_GRAPH",
  "EP_FAIL",
  "MODEL_LOAD_CANCELED",
  "MODEL_REQUIRES_COMPILATION",
  "NOT_FOUND",
  "DEVICE_RESET",
] as const;

/** The name of an `OrtErrorCode`, or `UNKNOWN(n)` for a code newer than this binding. */
export type OrtErrorCodeName = (typeof ORT_ERROR_CODES)[number] | `UNKNOWN(${number})`;

/** Maps a numeric `OrtErrorCode` to its name. */
export function errorCodeName(code: number): OrtErrorCodeName {
  return ORT_ERROR_CODES[code] ?? `UNKNOWN(${code})`;
}

/**
 * A non-OK `OrtStatus` returned by an ONNX Runtime call, carrying ORT's own code
 * and message.
 */
export class OrtError extends Error {
  override name = "OrtError";
  /** The C API function that failed, e.g. `CreateSession`. */
  readonly call: string;
  /** ORT's numeric `OrtErrorCode`. */
  readonly code: number;
  /** The name of {@linkcode OrtError.code}, e.g. `NO_SUCHFILE`. */
  readonly codeName: OrtErrorCodeName;
  /** ORT's message, verbatim. */
  readonly ortMessage: string;

  /** Wraps ORT's code and message for the failed call. */
  constructor(call: string, code: number, ortMessage: string, context?: string) {
    const codeName = errorCodeName(code);
    super(`${context ?? call} failed [ORT ${codeName}]: ${ortMessage}`);
    this.call = call;
    this.code = code;
    this.codeName = codeName;
    this.ortMessage = ortMessage;
  }
}

/** The ONNX Runtime library could not be found, opened or used. */
export class OrtLoadError extends Error {
  override name = "OrtLoadError";
  /** The library path involved, when one was found. */
  readonly path: string | undefined;

  /** Describes why loading failed and, in the message, what to do. */
  constructor(message: string, path?: string, options?: ErrorOptions) {
    super(message, options);
    this.path = path;
  }
}

/** A method was called on a native object after `close()`. */
export class ClosedError extends Error {
  override name = "ClosedError";

  /** Names the closed object and the attempted call. */
  constructor(what: string, call: string) {
    super(`Cannot ${call} as the ${what} is closed`);
  }
}
