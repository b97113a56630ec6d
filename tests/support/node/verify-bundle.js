#!/usr/bin/env node
// Independent check of an ociart/cosign v3 key-mode Sigstore bundle with sigstore-js (@sigstore/verify).
//
// usage: node verify-bundle.js BUNDLE_JSON PUBLIC_KEY_PEM [EXPECTED_DIGEST [PREDICATE_TYPE]]
//
//   BUNDLE_JSON      a Sigstore bundle v0.3 (DSSE envelope, publicKey hint, no tlog entries)
//   PUBLIC_KEY_PEM   the trusted "PUBLIC KEY" PEM; the only key used (the bundle's hint is ignored)
//   EXPECTED_DIGEST  "sha256:<hex>": an in-toto v1 statement subject must carry this digest ("" or "-" = skip)
//   PREDICATE_TYPE   required predicateType (default https://sigstore.dev/cosign/sign/v1; "-" = skip)
//
// Prints exactly one JSON line: {"ok":true,...} (exit 0) or {"ok":false,"error":"...","code":"..."} (exit 1).
// Usage errors exit 2. Nothing here knows about OCI; the statement checks mirror signing.md §6.6.
'use strict';

const fs = require('fs');
const crypto = require('crypto');
const { bundleFromJSON, BUNDLE_V03_MEDIA_TYPE } = require('@sigstore/bundle');
const { Verifier, toSignedEntity } = require('@sigstore/verify');

const INTOTO_PAYLOAD_TYPE = 'application/vnd.in-toto+json';
const STATEMENT_V1 = 'https://in-toto.io/Statement/v1';
const COSIGN_SIGN_PREDICATE = 'https://sigstore.dev/cosign/sign/v1';

function out(result, code) {
  process.stdout.write(JSON.stringify(result) + '\n');
  process.exit(code);
}

function fail(message, code) {
  out({ ok: false, error: message, code: code || 'ERROR' }, 1);
}

const [bundlePath, keyPath, expectedDigestArg, predicateTypeArg] = process.argv.slice(2);
if (!bundlePath || !keyPath) {
  process.stderr.write('usage: verify-bundle.js BUNDLE_JSON PUBLIC_KEY_PEM [EXPECTED_DIGEST [PREDICATE_TYPE]]\n');
  process.exit(2);
}
const expectedDigest = expectedDigestArg && expectedDigestArg !== '-' ? expectedDigestArg : null;
const predicateType = predicateTypeArg === '-' ? null : predicateTypeArg || COSIGN_SIGN_PREDICATE;

let bundle;
try {
  const json = JSON.parse(fs.readFileSync(bundlePath, 'utf8'));
  bundle = bundleFromJSON(json);
} catch (e) {
  fail(`bundle: ${e.message}${e.fields ? ' (' + e.fields.join(', ') + ')' : ''}`, 'BUNDLE_ERROR');
}
if (bundle.mediaType !== BUNDLE_V03_MEDIA_TYPE) {
  fail(`bundle mediaType is ${bundle.mediaType}, expected ${BUNDLE_V03_MEDIA_TYPE}`, 'BUNDLE_ERROR');
}
if (bundle.content.$case !== 'dsseEnvelope') {
  fail(`bundle content is ${bundle.content.$case}, expected dsseEnvelope`, 'BUNDLE_ERROR');
}

let publicKey;
try {
  publicKey = crypto.createPublicKey(fs.readFileSync(keyPath));
} catch (e) {
  fail(`public key: ${e.message}`, 'KEY_ERROR');
}

// The trust material holds nothing but the configured key: no CAs, TSAs, Rekor or CT logs. The key finder is
// called with the bundle's publicKey.hint and deliberately ignores it (hints are informational; never trust them).
const seenHints = [];
const trustMaterial = {
  certificateAuthorities: [],
  timestampAuthorities: [],
  tlogs: [],
  ctlogs: [],
  publicKey: (hint) => {
    seenHints.push(hint);
    return { publicKey, validFor: () => true };
  },
};
const verifier = new Verifier(trustMaterial, { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 });

try {
  const entity = toSignedEntity(bundle);
  if (entity.key.$case !== 'public-key') {
    fail(`bundle verification material is ${entity.key.$case}, expected publicKey`, 'BUNDLE_ERROR');
  }
  verifier.verify(entity);
} catch (e) {
  fail(e.message, e.code || e.name);
}

// Signature is good: now the statement (sigstore-js verifies bytes, not what they say).
const env = bundle.content.dsseEnvelope;
if (env.payloadType !== INTOTO_PAYLOAD_TYPE) {
  fail(`payloadType is ${env.payloadType}, expected ${INTOTO_PAYLOAD_TYPE}`, 'STATEMENT_ERROR');
}
let statement;
try {
  statement = JSON.parse(Buffer.from(env.payload).toString('utf8'));
} catch (e) {
  fail(`payload is not JSON: ${e.message}`, 'STATEMENT_ERROR');
}
if (!statement || statement._type !== STATEMENT_V1) {
  fail(`statement _type is ${statement && statement._type}, expected ${STATEMENT_V1}`, 'STATEMENT_ERROR');
}
const subjects = Array.isArray(statement.subject) ? statement.subject : [];
const subjectDigests = subjects
  .filter((s) => s && s.digest && typeof s.digest.sha256 === 'string')
  .map((s) => `sha256:${s.digest.sha256}`);
if (expectedDigest && !subjectDigests.includes(expectedDigest)) {
  fail(`subject mismatch: statement names ${subjectDigests.join(', ') || 'none'}, not ${expectedDigest}`,
    'STATEMENT_ERROR');
}
if (predicateType && statement.predicateType !== predicateType) {
  fail(`predicateType is ${statement.predicateType}, expected ${predicateType}`, 'STATEMENT_ERROR');
}

out({ ok: true, subjects: subjectDigests, predicateType: statement.predicateType, hints: seenHints }, 0);
