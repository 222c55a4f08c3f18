/**
 * The part of ONNX Runtime's `OrtApi` function table that parastep calls.
 *
 * `OrtApi` is a flat, append-only table of function pointers: the function in
 * slot `i` sits at byte offset `i * 8`, and a slot added in API version `v`
 * keeps its index in every later release. Each entry records its slot, the API
 * version that added it (so the loader can ask `GetApi` for the lowest version
 * that covers everything used here) and its C signature in Deno FFI terms.
 *
 * Conventions: `"pointer"` for ORT handles and returned `OrtStatus*` (NULL
 * means success), `"buffer"` for out-parameters, arrays and C strings passed
 * by address, `"usize"` for `size_t` (a bigint in Deno's types).
 *
 * Slot numbers were checked against ORT's own `static_assert`s and the 1.30
 * library (see shared/docs/reference/ort-c-api.md).
 *
 * @module
 */

const status = "pointer" as const;

/** Every OrtApi function parastep uses: slot, API version that added it, FFI signature. */
export const ORT_FUNCTIONS = {
  GetErrorCode: { slot: 1, since: 1, parameters: ["pointer"], result: "i32" },
  GetErrorMessage: { slot: 2, since: 1, parameters: ["pointer"], result: "pointer" },
  CreateEnv: { slot: 3, since: 1, parameters: ["i32", "buffer", "buffer"], result: status },
  CreateSession: {
    slot: 7,
    since: 1,
    parameters: ["pointer", "buffer", "pointer", "buffer"],
    result: status,
  },
  CreateSessionFromArray: {
    slot: 8,
    since: 1,
    parameters: ["pointer", "buffer", "usize", "pointer", "buffer"],
    result: status,
  },
  // Run(session, run_options, input_names, inputs, n_in, output_names, n_out, outputs)
  Run: {
    slot: 9,
    since: 1,
    parameters: ["pointer", "pointer", "buffer", "buffer", "usize", "buffer", "usize", "buffer"],
    result: status,
  },
  CreateSessionOptions: { slot: 10, since: 1, parameters: ["buffer"], result: status },
  SetOptimizedModelFilePath: {
    slot: 11,
    since: 1,
    parameters: ["pointer", "buffer"],
    result: status,
  },
  EnableProfiling: { slot: 14, since: 1, parameters: ["pointer", "buffer"], result: status },
  DisableCpuMemArena: { slot: 19, since: 1, parameters: ["pointer"], result: status },
  SetSessionLogSeverityLevel: {
    slot: 22,
    since: 1,
    parameters: ["pointer", "i32"],
    result: status,
  },
  SetSessionGraphOptimizationLevel: {
    slot: 23,
    since: 1,
    parameters: ["pointer", "i32"],
    result: status,
  },
  SetIntraOpNumThreads: { slot: 24, since: 1, parameters: ["pointer", "i32"], result: status },
  SetInterOpNumThreads: { slot: 25, since: 1, parameters: ["pointer", "i32"], result: status },
  SessionGetInputCount: { slot: 30, since: 1, parameters: ["pointer", "buffer"], result: status },
  SessionGetOutputCount: { slot: 31, since: 1, parameters: ["pointer", "buffer"], result: status },
  SessionGetInputTypeInfo: {
    slot: 33,
    since: 1,
    parameters: ["pointer", "usize", "buffer"],
    result: status,
  },
  SessionGetOutputTypeInfo: {
    slot: 34,
    since: 1,
    parameters: ["pointer", "usize", "buffer"],
    result: status,
  },
  SessionGetInputName: {
    slot: 36,
    since: 1,
    parameters: ["pointer", "usize", "pointer", "buffer"],
    result: status,
  },
  SessionGetOutputName: {
    slot: 37,
    since: 1,
    parameters: ["pointer", "usize", "pointer", "buffer"],
    result: status,
  },
  CreateRunOptions: { slot: 39, since: 1, parameters: ["buffer"], result: status },
  RunOptionsSetRunLogSeverityLevel: {
    slot: 41,
    since: 1,
    parameters: ["pointer", "i32"],
    result: status,
  },
  RunOptionsSetTerminate: { slot: 46, since: 1, parameters: ["pointer"], result: status },
  RunOptionsUnsetTerminate: { slot: 47, since: 1, parameters: ["pointer"], result: status },
  // CreateTensorWithDataAsOrtValue(info, data, data_bytes, shape, shape_len, type, out)
  CreateTensorWithDataAsOrtValue: {
    slot: 49,
    since: 1,
    parameters: ["pointer", "buffer", "usize", "buffer", "usize", "i32", "buffer"],
    result: status,
  },
  GetTensorMutableData: { slot: 51, since: 1, parameters: ["pointer", "buffer"], result: status },
  CastTypeInfoToTensorInfo: {
    slot: 55,
    since: 1,
    parameters: ["pointer", "buffer"],
    result: status,
  },
  GetOnnxTypeFromTypeInfo: {
    slot: 56,
    since: 1,
    parameters: ["pointer", "buffer"],
    result: status,
  },
  GetTensorElementType: { slot: 60, since: 1, parameters: ["pointer", "buffer"], result: status },
  GetDimensionsCount: { slot: 61, since: 1, parameters: ["pointer", "buffer"], result: status },
  GetDimensions: { slot: 62, since: 1, parameters: ["pointer", "buffer", "usize"], result: status },
  GetSymbolicDimensions: {
    slot: 63,
    since: 1,
    parameters: ["pointer", "buffer", "usize"],
    result: status,
  },
  GetTensorTypeAndShape: { slot: 65, since: 1, parameters: ["pointer", "buffer"], result: status },
  CreateCpuMemoryInfo: { slot: 69, since: 1, parameters: ["i32", "i32", "buffer"], result: status },
  AllocatorFree: { slot: 76, since: 1, parameters: ["pointer", "pointer"], result: status },
  GetAllocatorWithDefaultOptions: { slot: 78, since: 1, parameters: ["buffer"], result: status },
  ReleaseEnv: { slot: 92, since: 1, parameters: ["pointer"], result: "void" },
  ReleaseStatus: { slot: 93, since: 1, parameters: ["pointer"], result: "void" },
  ReleaseMemoryInfo: { slot: 94, since: 1, parameters: ["pointer"], result: "void" },
  ReleaseSession: { slot: 95, since: 1, parameters: ["pointer"], result: "void" },
  ReleaseValue: { slot: 96, since: 1, parameters: ["pointer"], result: "void" },
  ReleaseRunOptions: { slot: 97, since: 1, parameters: ["pointer"], result: "void" },
  ReleaseTypeInfo: { slot: 98, since: 1, parameters: ["pointer"], result: "void" },
  ReleaseTensorTypeAndShapeInfo: { slot: 99, since: 1, parameters: ["pointer"], result: "void" },
  ReleaseSessionOptions: { slot: 100, since: 1, parameters: ["pointer"], result: "void" },
  // SessionEndProfiling(session, allocator, char** out): the trace file's path, freed with the allocator.
  SessionEndProfiling: {
    slot: 110,
    since: 2,
    parameters: ["pointer", "pointer", "buffer"],
    result: status,
  },
  AddFreeDimensionOverrideByName: {
    slot: 124,
    since: 3,
    parameters: ["pointer", "buffer", "i64"],
    result: status,
  },
  GetAvailableProviders: { slot: 125, since: 4, parameters: ["buffer", "buffer"], result: status },
  ReleaseAvailableProviders: {
    slot: 126,
    since: 4,
    parameters: ["pointer", "i32"],
    result: status,
  },
  AddSessionConfigEntry: {
    slot: 130,
    since: 5,
    parameters: ["pointer", "buffer", "buffer"],
    result: status,
  },
  // RunWithBinding(session, run_options, binding)
  RunWithBinding: {
    slot: 133,
    since: 5,
    parameters: ["pointer", "pointer", "pointer"],
    result: status,
  },
  CreateIoBinding: { slot: 134, since: 5, parameters: ["pointer", "buffer"], result: status },
  ReleaseIoBinding: { slot: 135, since: 5, parameters: ["pointer"], result: "void" },
  // BindInput / BindOutput(binding, name, value): a host input is copied to its device here.
  BindInput: { slot: 136, since: 5, parameters: ["pointer", "buffer", "pointer"], result: status },
  BindOutput: { slot: 137, since: 5, parameters: ["pointer", "buffer", "pointer"], result: status },
  SessionOptionsAppendExecutionProvider_CUDA_V2: {
    slot: 204,
    since: 11,
    parameters: ["pointer", "pointer"],
    result: status,
  },
  CreateCUDAProviderOptions: { slot: 205, since: 11, parameters: ["buffer"], result: status },
  UpdateCUDAProviderOptions: {
    slot: 206,
    since: 11,
    parameters: ["pointer", "buffer", "buffer", "usize"],
    result: status,
  },
  ReleaseCUDAProviderOptions: { slot: 208, since: 11, parameters: ["pointer"], result: "void" },
  // The generic entry point: "WebGPU", "XNNPACK", ... (never "CUDA": that goes through _CUDA_V2).
  SessionOptionsAppendExecutionProvider: {
    slot: 216,
    since: 12,
    parameters: ["pointer", "buffer", "buffer", "buffer", "usize"],
    result: status,
  },
  // Returns the string itself (not a status); ORT owns it.
  GetBuildInfoString: { slot: 254, since: 15, parameters: [], result: "pointer" },
} as const;

/**
 * Functions used when the library is new enough, with a fallback otherwise;
 * they do not raise {@linkcode REQUIRED_API_VERSION}.
 */
export const OPTIONAL_ORT_FUNCTIONS = {
  // Element type and shape of a value in one call instead of five (per Run output).
  GetTensorElementTypeAndShapeDataReference: {
    slot: 414,
    since: 24,
    parameters: ["pointer", "buffer", "buffer", "buffer"],
    result: status,
  },
  // Asks a CreateSession in flight on another thread to stop (checked between graph
  // transformation passes and between initializers); it then fails with MODEL_LOAD_CANCELED.
  SessionOptionsSetLoadCancellationFlag: {
    slot: 293,
    since: 22,
    parameters: ["pointer", "bool"],
    result: status,
  },
} as const;

/** The name of a function in {@linkcode ORT_FUNCTIONS}. */
export type OrtFunctionName = keyof typeof ORT_FUNCTIONS;

/** The lowest OrtApi version that provides every function parastep uses. */
export const REQUIRED_API_VERSION: number = Math.max(
  ...Object.values(ORT_FUNCTIONS).map((f) => f.since),
);

/** `ONNXTensorElementDataType` values for the element types parastep supports. */
export const ELEMENT_TYPE = {
  float32: 1,
  int32: 6,
  int64: 7,
  bool: 9,
  float16: 10,
} as const;

/** `OrtLoggingLevel`. */
export const LOGGING_LEVEL = { verbose: 0, info: 1, warning: 2, error: 3, fatal: 4 } as const;

/** `GraphOptimizationLevel`. */
export const GRAPH_OPTIMIZATION_LEVEL = { disabled: 0, basic: 1, extended: 2, all: 99 } as const;

/** `ONNXType`: the only kind of graph input or output parastep handles. */
export const ONNX_TYPE_TENSOR = 1;

/** `OrtAllocatorType` and `OrtMemType` for plain CPU memory owned by the caller. */
export const ORT_ARENA_ALLOCATOR = 1;
export const ORT_MEM_TYPE_DEFAULT = 0;
