// Media types of the OCI image spec and Docker's schema 2, and predicates over them.

export const MediaType = {
  OciLayout: 'application/vnd.oci.layout.header.v1+json',
  OciIndex: 'application/vnd.oci.image.index.v1+json',
  OciManifest: 'application/vnd.oci.image.manifest.v1+json',
  OciConfig: 'application/vnd.oci.image.config.v1+json',
  OciLayer: 'application/vnd.oci.image.layer.v1.tar',
  OciLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  OciLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  OciLayerNondistributable: 'application/vnd.oci.image.layer.nondistributable.v1.tar',
  OciLayerNondistributableGzip: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  OciLayerNondistributableZstd: 'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
  OciEmpty: 'application/vnd.oci.empty.v1+json',
  DockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  DockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  DockerConfig: 'application/vnd.docker.container.image.v1+json',
  DockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  DockerLayerForeignGzip: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  DockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  DockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
} as const;

export type KnownMediaType = (typeof MediaType)[keyof typeof MediaType];

export const INDEX_MEDIA_TYPES: readonly string[] = [MediaType.OciIndex, MediaType.DockerManifestList];
export const IMAGE_MANIFEST_MEDIA_TYPES: readonly string[] = [
  MediaType.OciManifest,
  MediaType.DockerManifest,
];
export const MANIFEST_MEDIA_TYPES: readonly string[] = [...IMAGE_MANIFEST_MEDIA_TYPES, ...INDEX_MEDIA_TYPES];
export const SCHEMA1_MEDIA_TYPES: readonly string[] = [
  MediaType.DockerSchema1,
  MediaType.DockerSchema1Signed,
];

/** The Accept header a registry client sends for manifests. */
export const MANIFEST_ACCEPT = MANIFEST_MEDIA_TYPES.join(', ');

export function isIndexMediaType(mt: string): boolean {
  return INDEX_MEDIA_TYPES.includes(mt);
}
export function isImageManifestMediaType(mt: string): boolean {
  return IMAGE_MANIFEST_MEDIA_TYPES.includes(mt);
}
/** A manifest or an index: something a registry serves under /manifests/. */
export function isManifestMediaType(mt: string): boolean {
  return MANIFEST_MEDIA_TYPES.includes(mt);
}
export function isSchema1MediaType(mt: string): boolean {
  return SCHEMA1_MEDIA_TYPES.includes(mt);
}

export type LayerCompression = 'gzip' | 'zstd' | 'none';

/** The compression a layer media type declares, or undefined if it is not a known layer type. */
export function layerCompressionOf(mt: string): LayerCompression | undefined {
  switch (mt) {
    case MediaType.OciLayer:
    case MediaType.OciLayerNondistributable:
      return 'none';
    case MediaType.OciLayerGzip:
    case MediaType.OciLayerNondistributableGzip:
    case MediaType.DockerLayerGzip:
    case MediaType.DockerLayerForeignGzip:
      return 'gzip';
    case MediaType.OciLayerZstd:
    case MediaType.OciLayerNondistributableZstd:
      return 'zstd';
    default:
      return undefined;
  }
}

export type ManifestFormat = 'oci' | 'docker';

/** The layer media type for a format and compression (docker has no zstd or uncompressed type). */
export function layerMediaType(format: ManifestFormat, compression: LayerCompression): string {
  if (format === 'docker') {
    if (compression !== 'gzip') return compression === 'zstd' ? MediaType.OciLayerZstd : MediaType.OciLayer;
    return MediaType.DockerLayerGzip;
  }
  return compression === 'gzip'
    ? MediaType.OciLayerGzip
    : compression === 'zstd'
      ? MediaType.OciLayerZstd
      : MediaType.OciLayer;
}
