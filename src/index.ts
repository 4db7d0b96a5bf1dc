// stratum's public API: everything a program needs, with one import.
//   import { copyImage, pull, push, inspect, openStore, RegistryClient } from 'stratum';

export * from './analyze/flatten.js';
export * from './analyze/image-diff.js';
export {
  HASH_HOLES_LIMIT,
  type ImageTree,
  type ImageTreeOptions,
  readImageTree,
} from './analyze/image-tree.js';
export type { ImageSource, ImageSourceOptions } from './analyze/layer-stream.js';
export * from './analyze/layers.js';
export { UnionTree, type UnionTreeOptions } from './analyze/union.js';
export * from './archive/docker-archive-reader.js';
export * from './archive/docker-archive-writer.js';
export * from './archive/oci-archive-reader.js';
export * from './archive/oci-archive-writer.js';
export {
  type BuildEvent,
  type BuildOptions,
  type BuildResult,
  BuildStepError,
  build,
} from './build/build.js';
export { BuildCache, buildCacheRoots, pruneBuildCache } from './build/cache.js';
export { type Dockerfile, type Instruction, parseDockerfile } from './build/dockerfile.js';
export * from './bundle/runtime-config.js';
export * from './bundle/unpack.js';
export * from './compression/compression.js';
export * from './content/types.js';
export * from './copy/copy.js';
export * from './digest/digest.js';
export * from './errors/errors.js';
export * from './image/image.js';
export * from './image/platform.js';
export * from './layer/apply.js';
export * from './layer/diff.js';
export { type TarEntryType, type TarHeader, TarReader } from './layer/tar-reader.js';
export * from './layer/whiteout.js';
export * from './layout/layout.js';
export * from './layout/store.js';
export { type BuildImageOptions, type BuildImageResult, buildImage } from './ops/build.js';
export * from './ops/copy-image.js';
export { type GcAllResult, type GcOptions, gc } from './ops/gc.js';
export * from './ops/import.js';
export * from './ops/inspect.js';
export * from './ops/layers.js';
export {
  type ContainerOpOptions,
  commit as commitImage,
  createContainer,
  openContainers,
  type RunImageOptions,
  type RunImageResult,
  runImage,
  runImage as run,
  startContainer,
  storeImage,
  withContainers,
} from './ops/run.js';
export { Session, type SessionOptions } from './ops/session.js';
export * from './ops/unpack.js';
export * from './reference/reference.js';
export { RegistryClient, type RegistryClientOptions } from './registry/client.js';
export {
  type Credential,
  type CredentialSource,
  DockerConfigCredentials,
  login,
  logout,
  staticCredentials,
} from './registry/credentials.js';
export * from './registry/target.js';
export { type CommitOptions, type CommitResult, commitContainer } from './runtime/commit.js';
export {
  type AttachOptions,
  type ContainerInfo,
  type ContainerStatus,
  Containers,
  type CreateOptions,
  type ExecOptions,
  type ExitResult,
} from './runtime/containers.js';
export {
  type ProcessResult,
  type ProcessRunOptions,
  reapProcesses,
  runProcess,
} from './runtime/process.js';
export { DEFAULT_CAPABILITIES, parseByteSize } from './runtime/spec.js';
export type { ContainerRecord } from './runtime/state.js';
export { parseVolumeSpec, type VolumeInfo, type VolumeSpec, Volumes } from './runtime/volumes.js';
export { Htpasswd, parseBasicAuth, parseHtpasswd } from './server/htpasswd.js';
export {
  closeRegistryServer,
  createRegistryServer,
  type RegistryServerOptions,
  registryServerState,
} from './server/server.js';
export * from './snapshot/chain-id.js';
export * from './snapshot/overlay.js';
export * from './snapshot/snapshots.js';
export * from './spec/media-types.js';
export * from './spec/types.js';
export * from './spec/validate.js';
export * from './transport/location.js';
export * from './transport/open.js';
