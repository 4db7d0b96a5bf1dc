// Bundles the CLI into one CommonJS file, dist/cli/stratum-bundle.cjs, that the `stratum` bin
// (dist/cli/stratum.cjs, from src/cli/stratum.cts) compiles through V8's code cache. Runs after
// tsc and bundles its output: dist/ stays the library, only the CLI gets a bundle.
//
// Inside the bundle every module keeps its own `import.meta.url`: each use is replaced by the
// URL of the module's file in dist/, computed from the bundle's directory when it runs, so
// `new URL('./monitor.js', import.meta.url)` and `createRequire(import.meta.url)` find what they
// found before. Packages stay external (required from node_modules). Modules that the CLI
// imports dynamically stay lazy: esbuild wraps them in functions run on first import().
// `npm run build` runs it after tsc; src/testing/cli.ts runs it when tsc ran after it.

import { spawnSync } from 'node:child_process';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { dirname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const DIST = join(ROOT, 'dist');
const CLI_DIR = join(DIST, 'cli');
const BUNDLE = join(CLI_DIR, 'stratum-bundle.cjs');
/** The `stratum` bin (tsc's output of src/cli/stratum.cts), which runs the bundle. */
const LAUNCHER = join(CLI_DIR, 'stratum.cjs');

// defined once at the top of the bundle, where `require` and `__dirname` are the bundle's own
// (a module may shadow `require`, as registry/undici.ts does with createRequire)
const MODULE_URL = '__stratumModuleUrl';
const BANNER = `"use strict";\nvar ${MODULE_URL} = (file) => require("node:url").pathToFileURL(require("node:path").join(__dirname, file)).href;`;

/** Replaces `import.meta.url` in each module of dist/ by the URL of that module's own file. */
const originalModuleUrl = {
  name: 'original-module-url',
  setup(b) {
    b.onLoad({ filter: /\.js$/ }, async (args) => {
      const text = await readFile(args.path, 'utf8');
      if (!text.includes('import.meta')) return undefined;
      const rel = relative(CLI_DIR, args.path).split(sep).join('/');
      const contents = text.replace(/\bimport\.meta\.url\b/g, `${MODULE_URL}(${JSON.stringify(rel)})`);
      const left = /\bimport\.meta\b.*/.exec(contents);
      if (left)
        throw new Error(`${args.path}: only import.meta.url is supported in the CLI bundle: ${left[0]}`);
      return { contents, loader: 'js', resolveDir: dirname(args.path) };
    });
  },
};

async function bundle() {
  const { outputFiles } = await build({
    // the program: main() on process.argv (main.js alone runs only when it is argv[1])
    stdin: {
      contents: "import { runCli } from './main.js';\nrunCli();\n",
      resolveDir: CLI_DIR,
      loader: 'js',
    },
    absWorkingDir: ROOT, // module paths in the bundle's comments: dist/...
    bundle: true,
    outfile: BUNDLE,
    format: 'cjs',
    platform: 'node',
    target: 'node20',
    packages: 'external',
    // import() of a node: module becomes a require on use (a vm.Script has no module loader)
    supported: { 'dynamic-import': false },
    sourcemap: 'linked',
    sourcesContent: false,
    legalComments: 'none',
    banner: { js: BANNER },
    logLevel: 'warning',
    plugins: [originalModuleUrl],
    write: false,
  });
  // map first, bundle last, each renamed into place: a CLI starting meanwhile (tests may make
  // the bundle again while others run it) reads the old bundle or the new one, never half
  outputFiles.sort((a, b) => Number(a.path === BUNDLE) - Number(b.path === BUNDLE));
  for (const f of outputFiles) {
    const tmp = `${f.path}.${process.pid}.tmp`;
    await writeFile(tmp, f.contents);
    await rename(tmp, f.path);
  }
  // a first run: checks the bundle starts, and leaves the code cache for the next
  const r = spawnSync(process.execPath, [LAUNCHER, '--version'], { encoding: 'utf8' });
  if (r.status !== 0 || !r.stdout.startsWith('stratum ')) {
    throw new Error(`${LAUNCHER} --version failed (${r.status ?? r.signal}): ${r.stderr}`);
  }
}

await bundle();
