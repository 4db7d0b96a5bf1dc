// undici, loaded lean. `import 'undici'` evaluates the whole package (fetch, WebSocket,
// caches, mocks, proxies) — about 100 ms of every CLI start — while a RegistryClient needs
// only the Agent and the request() call that the package's entry point mixes into it. Those
// two modules are loaded on first use; an undici that moved them falls back to the entry point.

import { createRequire } from 'node:module';
import type { Agent, Dispatcher } from 'undici';

export type UndiciRequest = (
  agent: Dispatcher,
  opts: Dispatcher.RequestOptions,
) => Promise<Dispatcher.ResponseData>;

export interface Undici {
  readonly Agent: typeof Agent;
  /** `agent.request(opts)`, without the package's mixin. */
  readonly request: UndiciRequest;
  /** Whether the two modules were found (false: the whole package was loaded). */
  readonly lean: boolean;
}

type RequestMethod = (this: Dispatcher, opts: Dispatcher.RequestOptions) => Promise<Dispatcher.ResponseData>;

let loaded: Undici | undefined;

export function undici(): Undici {
  if (loaded) return loaded;
  const require = createRequire(import.meta.url);
  try {
    const AgentClass: unknown = require('undici/lib/dispatcher/agent.js');
    const request: unknown = require('undici/lib/api/api-request.js');
    if (typeof AgentClass === 'function' && typeof request === 'function') {
      const method = request as RequestMethod;
      loaded = {
        Agent: AgentClass as typeof Agent,
        request: (agent, opts) => method.call(agent, opts),
        lean: true,
      };
      return loaded;
    }
  } catch {
    // laid out differently: use the package's entry point
  }
  const full = require('undici') as typeof import('undici');
  loaded = { Agent: full.Agent, request: (agent, opts) => agent.request(opts), lean: false };
  return loaded;
}
