// Reference names in an OCI layout's index.json (the `org.opencontainers.image.ref.name`
// annotation): the grammar of the image-spec's annotations.md, checked before a name is
// written. Names never become paths, but they are still validated so that what we write is
// what skopeo and umoci accept.
//
//   ref       ::= component ("/" component)*
//   component ::= alphanum (separator alphanum)*
//   alphanum  ::= [A-Za-z0-9]+
//   separator ::= [-._:@+] | "--"

import { StratumError } from '../errors/errors.js';

const COMPONENT = '[A-Za-z0-9]+(?:(?:--|[-._:@+])[A-Za-z0-9]+)*';
const REF_NAME_RE = new RegExp(`^${COMPONENT}(?:/${COMPONENT})*$`);

/** The longest ref name we accept (a full reference with a digest fits well inside). */
export const MAX_REF_NAME_LENGTH = 1024;

export function isRefName(s: unknown): s is string {
  return typeof s === 'string' && s.length <= MAX_REF_NAME_LENGTH && REF_NAME_RE.test(s);
}

/** Validate a ref name; throws ERR_INVALID_REFERENCE with the reason. */
export function checkRefName(s: unknown, where = 'OCI layout'): string {
  if (typeof s !== 'string') {
    throw new StratumError('ERR_INVALID_REFERENCE', `invalid ${where} reference name: not a string`);
  }
  if (s === '')
    throw new StratumError('ERR_INVALID_REFERENCE', `invalid ${where} reference name: it is empty`);
  if (s.length > MAX_REF_NAME_LENGTH) {
    throw new StratumError(
      'ERR_INVALID_REFERENCE',
      `invalid ${where} reference name: ${s.length} characters, over the limit of ${MAX_REF_NAME_LENGTH}`,
    );
  }
  if (!REF_NAME_RE.test(s)) {
    throw new StratumError(
      'ERR_INVALID_REFERENCE',
      `invalid ${where} reference name ${JSON.stringify(s.slice(0, 200))}: use letters, digits and the separators - . _ : @ + between them, and / between components`,
    );
  }
  return s;
}
