/**
 * ONNX Runtime's C API through `Deno.dlopen`: environments, sessions, tensors
 * and execution providers.
 *
 * Needs `--allow-ffi` (unscoped: the binding walks ORT's function table) and
 * `--allow-env` (for `PARASTEP_ORT_LIB`), plus `--allow-read` to read models
 * as bytes.
 *
 * @example
 * ```ts ignore
 * import { Env, Session, Tensor } from "./mod.ts";
 * using env = Env.create();
 * using session = Session.create(env, "model.onnx", { executionProvider: "auto" });
 * console.log(session.executionProvider, session.inputs);
 * ```
 *
 * @module
 */

export {
  CUDA_DRIVER_LIBRARY,
  CUDA_PROVIDER_FILES,
  CUDA_SETUP_COMMAND,
  CUDA_SETUP_FILE,
  type CudaDevice,
  type CudaInfo,
  cudaInfo,
  type CudaLibraryEntry,
  type CudaSetup,
  CudaSetupError,
  isCudaLibrary,
  loadCudaLibraries,
  readCudaSetup,
} from "./cuda.ts";
export {
  type ElfDynamic,
  ElfError,
  type ElfSection,
  readElfDynamic,
  readElfSections,
} from "./elf.ts";
export { Env, type EnvOptions, type LogLevel } from "./env.ts";
export {
  type ExitOptions,
  exitProcess,
  noteStrandedNativeCall,
  strandedNativeCalls,
} from "./exit.ts";
export { ClosedError, OrtError, type OrtErrorCodeName, OrtLoadError } from "./errors.ts";
export {
  CUDA_PROVIDERS_ENV,
  libraryCandidates,
  libraryFileName,
  ORT_LIBRARY_ENV,
  type OrtLibrary,
  ortLibrary,
} from "./library.ts";
export {
  appendRequestedProvider,
  AUTO_ORDER,
  autoCandidate,
  autoPrecheck,
  compiledProviders,
  type ExecutionProvider,
  ORT_PROVIDER_NAME,
  precheck,
  type ProbeOptions,
  probeProvider,
  type ProviderAttempt,
} from "./providers.ts";
export { ProcessLock, shareWebGpuLock, webGpuLock } from "./lock.ts";
export { withQuietStderr } from "./quiet.ts";
export {
  autoWebGpuUnsuitable,
  type VulkanDevice,
  type VulkanDevices,
  vulkanDevices,
  type VulkanDeviceType,
} from "./vulkan.ts";
export {
  type AsyncRunOptions,
  type AsyncSessionOptions,
  type Feeds,
  type InputTransfers,
  type ModelSource,
  type RunOptions,
  Session,
  type SessionOptions,
  type TensorInfo,
} from "./session.ts";
export {
  type CachedGraph,
  cpuFingerprint,
  GraphCache,
  type GraphCacheOptions,
  type GraphKey,
  type RuntimeIdentity,
} from "./graph_cache.ts";
export {
  type InitializerData,
  type InitializerInfo,
  readInitializers,
} from "./onnx_initializers.ts";
export { fieldBytes, OnnxFormatError, ProtoReader, readVarint, WIRE } from "./protobuf.ts";
export {
  allocate,
  BYTES_PER_ELEMENT,
  DATA_TYPES,
  type DataType,
  type DataTypeMap,
  elementCount,
  Tensor,
} from "./tensor.ts";
export { Value } from "./value.ts";
