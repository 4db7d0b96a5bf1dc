// The container commands: run, ps, logs, exec, stop, kill, rm, commit, volume. Each parses
// its options and calls src/runtime (through src/ops); no logic of its own.

import type { Command } from './commands.js';

export const runtimeCommands: Readonly<Record<string, Command>> = {};
