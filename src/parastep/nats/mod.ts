/**
 * The step exchange between hosts over NATS (docs/multihost.md): the binary step-message codec,
 * {@link connectNats} for `--nats` URLs, and {@link NatsTransport}, a `Transport<Float32Array>`
 * for `runRank` over one NATS connection.
 *
 * Kept out of `src/parastep/mod.ts` so that single-host runs never load the NATS client.
 *
 * @module
 */

export * from "./codec.ts";
export * from "./connect.ts";
export * from "./transport.ts";
