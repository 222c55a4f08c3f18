/**
 * The Vulkan devices of this machine, listed through the Vulkan loader itself
 * (`libvulkan.so.1`), without ONNX Runtime or Dawn.
 *
 * WebGPU runs on Dawn, and Dawn on Vulkan here. Asking Dawn for an adapter
 * when there is none prints warnings on stderr that bypass ORT's logger, and
 * a software renderer (Mesa's lavapipe) is an adapter Dawn accepts but that is
 * slower than ORT's own CPU provider. Listing the devices first lets
 * `--ep auto` skip WebGPU quietly in both cases and say why.
 *
 * @module
 */

/** `VkPhysicalDeviceType`. */
const DEVICE_TYPES = ["other", "integrated", "discrete", "virtual", "cpu"] as const;

/** What kind of device a Vulkan physical device is (`VkPhysicalDeviceType`). */
export type VulkanDeviceType = (typeof DEVICE_TYPES)[number];

/** One Vulkan physical device. */
export interface VulkanDevice {
  /** The driver's name for it, e.g. `llvmpipe (LLVM 15.0.6, 256 bits)`. */
  readonly name: string;
  /** Integrated, discrete, virtual, cpu (a software renderer) or other. */
  readonly type: VulkanDeviceType;
  /** PCI vendor id (0x10de NVIDIA, 0x10005 Mesa). */
  readonly vendorId: number;
  /** The Vulkan version the driver supports, as `major.minor.patch`. */
  readonly apiVersion: string;
}

/** The Vulkan devices, or why none could be listed. */
export type VulkanDevices =
  | { readonly ok: true; readonly devices: readonly VulkanDevice[] }
  | { readonly ok: false; readonly reason: string };

const LOADER: Partial<Record<typeof Deno.build.os, string>> = {
  linux: "libvulkan.so.1",
  windows: "vulkan-1.dll",
};

const SYMBOLS = {
  vkCreateInstance: { parameters: ["buffer", "pointer", "buffer"], result: "i32" },
  vkDestroyInstance: { parameters: ["pointer", "pointer"], result: "void" },
  vkEnumeratePhysicalDevices: { parameters: ["pointer", "buffer", "buffer"], result: "i32" },
  vkGetPhysicalDeviceProperties: { parameters: ["pointer", "buffer"], result: "void" },
} as const;

/** `VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO`. */
const INSTANCE_CREATE_INFO = 1;
/** `sizeof(VkInstanceCreateInfo)` on a 64-bit target. */
const INSTANCE_CREATE_INFO_BYTES = 64;
/** At least `sizeof(VkPhysicalDeviceProperties)` (824 on x86-64 and aarch64). */
const PROPERTIES_BYTES = 1024;
/** Offsets in `VkPhysicalDeviceProperties`. */
const PROPERTIES = { apiVersion: 0, vendorId: 8, deviceType: 16, deviceName: 20 } as const;
/** `VK_MAX_PHYSICAL_DEVICE_NAME_SIZE`. */
const NAME_BYTES = 256;

let cached: VulkanDevices | undefined;

/**
 * Lists the Vulkan physical devices (once per realm; the answer is cached).
 * Creates and destroys one Vulkan instance with no layers or extensions.
 */
export function vulkanDevices(): VulkanDevices {
  return cached ??= list();
}

function list(): VulkanDevices {
  const file = LOADER[Deno.build.os];
  if (file === undefined) return { ok: false, reason: `no Vulkan loader on ${Deno.build.os}` };
  let lib: Deno.DynamicLibrary<typeof SYMBOLS>;
  try {
    lib = Deno.dlopen(file, SYMBOLS);
  } catch {
    return { ok: false, reason: `${file} (the Vulkan loader WebGPU needs) cannot be loaded` };
  }
  // The loader is never closed: closing it would unload the drivers it loaded, which Dawn may use.
  const info = new Uint8Array(INSTANCE_CREATE_INFO_BYTES);
  new DataView(info.buffer).setUint32(0, INSTANCE_CREATE_INFO, true);
  const out = new BigUint64Array(1);
  const created = lib.symbols.vkCreateInstance(info, null, out);
  const instance = Deno.UnsafePointer.create(out[0] ?? 0n);
  if (created !== 0 || instance === null) {
    // VK_ERROR_INCOMPATIBLE_DRIVER (-9): the loader found no driver (ICD) at all.
    return {
      ok: false,
      reason: created === -9
        ? "no Vulkan driver is installed (a GPU driver's Vulkan ICD is needed)"
        : `vkCreateInstance failed (VkResult ${created})`,
    };
  }
  try {
    const count = new Uint32Array(1);
    let result = lib.symbols.vkEnumeratePhysicalDevices(instance, count, null);
    if (result !== 0) return { ok: false, reason: `vkEnumeratePhysicalDevices failed (${result})` };
    const handles = new BigUint64Array(Math.max(1, count[0]!));
    result = lib.symbols.vkEnumeratePhysicalDevices(instance, count, handles);
    // VK_INCOMPLETE (5): a device appeared between the calls; the ones returned are enough.
    if (result !== 0 && result !== 5) {
      return { ok: false, reason: `vkEnumeratePhysicalDevices failed (${result})` };
    }
    const devices: VulkanDevice[] = [];
    const props = new Uint8Array(PROPERTIES_BYTES);
    const view = new DataView(props.buffer);
    for (let k = 0; k < count[0]!; k++) {
      const handle = Deno.UnsafePointer.create(handles[k]!);
      if (handle === null) continue;
      props.fill(0);
      lib.symbols.vkGetPhysicalDeviceProperties(handle, props);
      const name = props.subarray(PROPERTIES.deviceName, PROPERTIES.deviceName + NAME_BYTES);
      const end = name.indexOf(0);
      const api = view.getUint32(PROPERTIES.apiVersion, true);
      devices.push({
        name: new TextDecoder().decode(name.subarray(0, end < 0 ? NAME_BYTES : end)),
        type: DEVICE_TYPES[view.getUint32(PROPERTIES.deviceType, true)] ?? "other",
        vendorId: view.getUint32(PROPERTIES.vendorId, true),
        // VK_API_VERSION_MAJOR/MINOR/PATCH
        apiVersion: `${(api >>> 22) & 0x7f}.${(api >>> 12) & 0x3ff}.${api & 0xfff}`,
      });
    }
    return { ok: true, devices };
  } finally {
    lib.symbols.vkDestroyInstance(instance, null);
  }
}

/**
 * Why WebGPU should not be picked automatically here, or undefined when a
 * hardware Vulkan device is present. A software renderer alone does not count:
 * it runs the shaders on the CPU, slower than ORT's CPU provider (measured on a
 * loaded 2-core host, tiny model: lavapipe 200-400 ms per UNet call once its
 * shader cache is warm, minutes for the first run, against about 40 ms on the
 * CPU provider). `--ep webgpu` still runs on one.
 */
export function autoWebGpuUnsuitable(devices: VulkanDevices = vulkanDevices()): string | undefined {
  if (!devices.ok) return devices.reason;
  if (devices.devices.length === 0) return "the Vulkan loader lists no device";
  if (devices.devices.every((d) => d.type === "cpu")) {
    return `the only Vulkan device is a software renderer (${
      devices.devices.map((d) => d.name).join(", ")
    }), slower than the CPU provider; --ep webgpu uses it anyway`;
  }
  return undefined;
}
