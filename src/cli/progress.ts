/**
 * A one-line progress bar on stderr, drawn only when stderr is a terminal.
 *
 * @module
 */

const WIDTH = 30;
const encoder = new TextEncoder();

/** Progress of one stage with a known number of steps. */
export class ProgressBar {
  readonly #label: string;
  readonly #total: number;
  readonly #enabled: boolean;
  readonly #start = performance.now();
  #lastDraw = 0;
  #drawn = false;

  /**
   * @param label what is progressing, e.g. "denoise"
   * @param total the number of steps
   * @param enabled draw at all (default: when stderr is a terminal)
   */
  constructor(label: string, total: number, enabled = Deno.stderr.isTerminal()) {
    this.#label = label;
    this.#total = total;
    this.#enabled = enabled;
  }

  /** Marks `done` of the steps complete; redraws at most ten times a second. */
  update(done: number): void {
    if (!this.#enabled) return;
    const now = performance.now();
    if (done < this.#total && now - this.#lastDraw < 100) return;
    this.#lastDraw = now;
    const filled = Math.round((done / this.#total) * WIDTH);
    const bar = "█".repeat(filled) + "░".repeat(WIDTH - filled);
    const seconds = ((now - this.#start) / 1000).toFixed(1);
    Deno.stderr.writeSync(
      encoder.encode(`\r${this.#label} ${bar} ${done}/${this.#total} steps ${seconds} s`),
    );
    this.#drawn = true;
  }

  /** Clears the line so the next output starts clean. */
  finish(): void {
    if (this.#drawn) Deno.stderr.writeSync(encoder.encode("\r\x1b[2K"));
    this.#drawn = false;
  }
}
