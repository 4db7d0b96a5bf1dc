// Types of the OCI image spec documents and Docker schema-2 documents. Pure data; the
// validators in validate.ts turn untrusted JSON into these.

import type { Digest } from '../digest/digest.js';

export interface Platform {
  readonly architecture: string;
  readonly os: string;
  readonly 'os.version'?: string;
  readonly 'os.features'?: readonly string[];
  readonly variant?: string;
  readonly features?: readonly string[];
}

export interface Descriptor {
  readonly mediaType: string;
  readonly digest: Digest;
  readonly size: number;
  readonly urls?: readonly string[];
  readonly annotations?: Readonly<Record<string, string>>;
  readonly data?: string;
  readonly platform?: Platform;
  readonly artifactType?: string;
}

/** OCI image manifest, or Docker schema-2 manifest (same shape). */
export interface ImageManifest {
  readonly schemaVersion: 2;
  readonly mediaType?: string;
  readonly artifactType?: string;
  readonly config: Descriptor;
  readonly layers: readonly Descriptor[];
  readonly subject?: Descriptor;
  readonly annotations?: Readonly<Record<string, string>>;
}

/** OCI image index, or Docker manifest list (same shape). */
export interface ImageIndex {
  readonly schemaVersion: 2;
  readonly mediaType?: string;
  readonly artifactType?: string;
  readonly manifests: readonly Descriptor[];
  readonly subject?: Descriptor;
  readonly annotations?: Readonly<Record<string, string>>;
}

/** A parsed manifest-or-index with the media type it was established to have. */
export type ManifestDocument =
  | { readonly kind: 'manifest'; readonly mediaType: string; readonly manifest: ImageManifest }
  | { readonly kind: 'index'; readonly mediaType: string; readonly index: ImageIndex };

export interface HealthConfig {
  readonly Test?: readonly string[];
  readonly Interval?: number;
  readonly Timeout?: number;
  readonly StartPeriod?: number;
  readonly StartInterval?: number;
  readonly Retries?: number;
}

export interface ContainerConfig {
  readonly User?: string;
  readonly ExposedPorts?: Readonly<Record<string, object>>;
  readonly Env?: readonly string[];
  readonly Entrypoint?: readonly string[] | null;
  readonly Cmd?: readonly string[] | null;
  readonly Volumes?: Readonly<Record<string, object>>;
  readonly WorkingDir?: string;
  readonly Labels?: Readonly<Record<string, string>>;
  readonly StopSignal?: string;
  readonly ArgsEscaped?: boolean;
  readonly Healthcheck?: HealthConfig;
  readonly OnBuild?: readonly string[] | null;
  readonly Shell?: readonly string[];
}

export interface HistoryEntry {
  readonly created?: string;
  readonly created_by?: string;
  readonly author?: string;
  readonly comment?: string;
  readonly empty_layer?: boolean;
}

export interface RootFs {
  readonly type: 'layers';
  readonly diff_ids: readonly Digest[];
}

export interface ImageConfig {
  readonly created?: string;
  readonly author?: string;
  readonly architecture: string;
  readonly os: string;
  readonly 'os.version'?: string;
  readonly 'os.features'?: readonly string[];
  readonly variant?: string;
  readonly config?: ContainerConfig;
  readonly rootfs: RootFs;
  readonly history?: readonly HistoryEntry[];
}

/** `oci-layout` file. */
export interface OciLayoutFile {
  readonly imageLayoutVersion: string;
}

/** One entry of a docker-save `manifest.json`. */
export interface DockerArchiveEntry {
  readonly Config: string;
  readonly RepoTags: readonly string[] | null;
  readonly Layers: readonly string[];
  readonly LayerSources?: Readonly<Record<string, Descriptor>>;
}

export const ANNOTATION_REF_NAME = 'org.opencontainers.image.ref.name';
export const ANNOTATION_CREATED = 'org.opencontainers.image.created';
/** containerd's annotation for the full image name in an OCI archive. */
export const ANNOTATION_IMAGE_NAME = 'io.containerd.image.name';

/** Limits on documents read from outside (bytes). */
export const Limits = {
  manifest: 4 * 1024 * 1024,
  config: 64 * 1024 * 1024,
  token: 1024 * 1024,
  errorBody: 64 * 1024,
  archiveManifest: 4 * 1024 * 1024,
  /** A descriptor size larger than this is absurd (1 TiB); also bounded by Number.MAX_SAFE_INTEGER. */
  blob: 2 ** 40,
} as const;
