// stratum's public API: everything a program needs, with one import.

export * from './content/types.js';
export * from './digest/digest.js';
export * from './errors/errors.js';
export * from './spec/media-types.js';
export * from './spec/types.js';
