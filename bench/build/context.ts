// The build bench's input: one Dockerfile (the base image comes in as a build arg, so stratum
// and buildah build the very same file) and a generated context of many small text files.
// Deterministic: the same options make the same bytes.

import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Steps that change files: 3 RUN, WORKDIR (makes /app), COPY. ENV and CMD only change the config.
 * `/app/count` ends up holding the number of context files, which the bench checks.
 */
export const DOCKERFILE = `# stratum bench/build
ARG BASE
FROM $BASE
RUN mkdir -p /opt/gen && i=0; while [ $i -lt 300 ]; do echo "generated file $i" > /opt/gen/f$i; i=$((i+1)); done
RUN seq 1 200000 > /opt/numbers && sha256sum /opt/numbers > /opt/numbers.sha256
ENV APP_HOME=/app MODE=bench
WORKDIR /app
COPY src/ /app/src/
RUN find /app/src -type f | wc -l > /app/count && du -sk /app/src > /app/size
CMD ["cat", "/app/count"]
`;

export interface Context {
  readonly dir: string;
  readonly files: number;
  readonly bytes: number;
}

/** A small PRNG (mulberry32), so the context is the same every time. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const WORDS =
  'alpha beta gamma delta layer image build cache stratum overlay snapshot digest manifest config'.split(' ');

/** Write the Dockerfile and `src/` (`files` files in directories of 50, 200 B..3 KB of text each). */
export async function makeContext(dir: string, files = 3000): Promise<Context> {
  const rnd = prng(42);
  await mkdir(join(dir, 'src'), { recursive: true });
  await writeFile(join(dir, 'Dockerfile'), DOCKERFILE);
  let bytes = 0;
  for (let i = 0; i < files; i++) {
    const sub = join(dir, 'src', `d${String(Math.floor(i / 50)).padStart(3, '0')}`);
    if (i % 50 === 0) await mkdir(sub, { recursive: true });
    const size = 200 + Math.floor(rnd() * 2800);
    let text = `// file ${i}\n`;
    while (text.length < size) {
      text += `${WORDS[Math.floor(rnd() * WORDS.length)]} ${Math.floor(rnd() * 1e6)}${rnd() < 0.1 ? '\n' : ' '}`;
    }
    await writeFile(join(sub, `f${i}.txt`), text);
    bytes += Buffer.byteLength(text);
  }
  return { dir, files, bytes };
}
