// Streams whose bytes are already checked against a digest and size as they flow: the
// VerifyingStream a Fetcher hands out, or a pass-through over one that forwards its errors.
// Such a stream errors before it ends when the bytes do not match, so a Pusher given one for
// the same digest and size can skip hashing them a second time and still never commit
// unverified bytes. A mark is only ever added by the code that made the verifying stream.

const marks = new WeakMap<object, { readonly digest: string; readonly size: number }>();

/** Record that `stream` verifies `digest` and `size` before it ends. Returns the stream. */
export function markVerified<T extends object>(stream: T, digest: string, size: number): T {
  marks.set(stream, { digest, size });
  return stream;
}

/** Whether `stream` was marked as verifying exactly this digest and size. */
export function isVerified(stream: unknown, digest: string, size: number): boolean {
  if (typeof stream !== 'object' || stream === null) return false;
  const m = marks.get(stream);
  return m !== undefined && m.digest === digest && m.size === size;
}
