// `stratum build`: parses its options and calls src/build (through src/ops); no logic of its own.

import type { Command } from './commands.js';

export const buildCommands: Readonly<Record<string, Command>> = {};
