/**
 * What `bench:open` asks a measuring process for and what it answers (the
 * Deno child and the Python counterpart, bench/open.py, speak the same JSON).
 *
 * @module
 */

/** One measuring process's task. */
export interface ChildSpec {
  /** Model name or folder (`--model`). */
  model: string;
  components: string[];
  /** Sessions opened at once, one per Worker (parastep) or thread (Python). */
  workers: number;
  /** Intra-op threads per session; null: floor(cores / workers), at least 1. */
  threads: number | null;
  level: "disabled" | "basic" | "extended" | "all";
  /** How the runtime gets the graph. */
  source: "auto" | "path" | "bytes";
  prepacking: boolean;
  /** Graph cache folder (parastep only), or null. */
  cacheDir: string | null;
  /** One session opened by the coordinator, borrowed by every worker (parastep only). */
  borrow: boolean;
  /** Verbose ORT log with markers on stderr (1 worker only). */
  phases: boolean;
}

/** One component's numbers. */
export interface ComponentResult {
  /** Session creation per worker, ms. */
  ms: number[];
  /** From the coordinator's start (its own open included) to every session open, ms. */
  wallMs: number;
  /** The coordinator opening the session the workers borrow (borrow only), ms. */
  ownerMs: number;
  /** Growth of the process's resident memory, MiB. */
  rssMiB: number;
  /** Graph cache status ("hit", "written", "off"). */
  cache: string;
}

/** What a measuring process prints. */
export interface ChildResult {
  /** The first session of the process (a tiny graph): ORT's one-time start, ms. */
  firstSessionMs: number;
  components: Record<string, ComponentResult>;
}
