/**
 * The gRPC service `netrig.test.Echo` the end-to-end tests call, defined by hand for
 * @grpc/grpc-js (no protobuf compiler): messages are raw bytes, serialised as they are.
 *
 *   Unary         1 request → 1 response: the request's bytes echoed back
 *   ServerStream  1 request → STREAM_REPLY_BYTES.length responses of those sizes
 *   Fail          1 request → no response, status NOT_FOUND with FAIL_MESSAGE
 *
 * Shared by grpc-echo-server-main.ts, grpc-echo-client-main.ts and the tests.
 */
import type { ServiceDefinition } from '@grpc/grpc-js';

export const ECHO_SERVICE_NAME = 'netrig.test.Echo';
export const ECHO_METHODS = ['Unary', 'ServerStream', 'Fail'] as const;
export type EchoMethod = (typeof ECHO_METHODS)[number];

/** Sizes of the messages ServerStream answers with, in order. */
export const STREAM_REPLY_BYTES: readonly number[] = [16, 300, 2500];
/** grpc.status.NOT_FOUND */
export const FAIL_STATUS = 5;
/** Spaces, non-ASCII and a '%': grpc-message travels percent-encoded. */
export const FAIL_MESSAGE = 'no such thing: grüße 100% — ✓';

const identity = (b: Buffer): Buffer => b;

function method(name: EchoMethod, responseStream: boolean) {
  return {
    path: `/${ECHO_SERVICE_NAME}/${name}`,
    requestStream: false,
    responseStream,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
    originalName: name,
  };
}

export const ECHO_SERVICE: ServiceDefinition = {
  Unary: method('Unary', false),
  ServerStream: method('ServerStream', true),
  Fail: method('Fail', false),
};

/** `size` deterministic bytes, different per `seed`. */
export function payload(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  let x = (seed * 2654435761) >>> 0;
  for (let i = 0; i < size; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}
