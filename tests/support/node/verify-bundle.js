#!/usr/bin/env node
// Independent check of an ociart/cosign v3 Sigstore bundle with sigstore-js (@sigstore/verify).
//
// key mode:
//   node verify-bundle.js BUNDLE_JSON PUBLIC_KEY_PEM [EXPECTED_DIGEST [PREDICATE_TYPE]]
// keyless mode:
//   node verify-bundle.js BUNDLE_JSON --trusted-root TRUSTED_ROOT_JSON --identity SAN --issuer ISSUER
//                         [--tlog-threshold N] [--ctlog-threshold N] [EXPECTED_DIGEST [PREDICATE_TYPE]]
//
//   BUNDLE_JSON      a Sigstore bundle v0.3 with a DSSE envelope; key mode: publicKey hint, no tlog entries;
//                    keyless mode: a Fulcio leaf certificate and Rekor entries
//   PUBLIC_KEY_PEM   the trusted "PUBLIC KEY" PEM; the only key used (the bundle's hint is ignored)
//   --trusted-root   a Sigstore trusted_root.json (Fulcio CAs, Rekor logs, CT logs, TSAs); the only trust material
//   --identity       the exact certificate SAN required (matched as a whole string, not as a regular expression)
//   --issuer         the exact OIDC issuer required (Fulcio issuer extension, 1.3.6.1.4.1.57264.1.8 or .1.1)
//   --tlog-threshold / --ctlog-threshold   minimum number of verified Rekor entries / SCTs (default 1 / 1).
//                    Keyless mode also requires 1 verified timestamp (Rekor integratedTime with an inclusion
//                    promise); the certificate chain must be valid at every verified timestamp.
//   EXPECTED_DIGEST  "sha256:<hex>": an in-toto v1 statement subject must carry this digest ("" or "-" = skip)
//   PREDICATE_TYPE   required predicateType (default https://sigstore.dev/cosign/sign/v1; "-" = skip)
//
// Prints exactly one JSON line: {"ok":true,...} (exit 0) or {"ok":false,"error":"...","code":"..."} (exit 1).
// Usage errors exit 2. Nothing here knows about OCI; the statement checks mirror signing.md §6.6.
'use strict';

const fs = require('fs');
const crypto = require('crypto');
const path = require('path');
const { bundleFromJSON, BUNDLE_V03_MEDIA_TYPE } = require('@sigstore/bundle');
const { Verifier, toSignedEntity, toTrustMaterial } = require('@sigstore/verify');
// TrustedRoot comes from the @sigstore/protobuf-specs that @sigstore/verify itself uses (not a direct dependency of
// package.json, so resolve it from @sigstore/verify's location rather than relying on npm's hoisting).
const { TrustedRoot } = require(require.resolve('@sigstore/protobuf-specs', {
  paths: [path.dirname(require.resolve('@sigstore/verify/package.json'))],
}));

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

// sigstore-js wraps the specific reason (e.g. "certificate is not valid or expired at the specified date") in
// `cause`: report the whole chain.
function describe(e) {
  const parts = [];
  for (let err = e; err && parts.length < 5; err = err.cause) parts.push(err.message || String(err));
  return parts.join(': ');
}

const USAGE = 'usage: verify-bundle.js BUNDLE_JSON PUBLIC_KEY_PEM [EXPECTED_DIGEST [PREDICATE_TYPE]]\n' +
  '       verify-bundle.js BUNDLE_JSON --trusted-root FILE --identity SAN --issuer ISSUER ' +
  '[--tlog-threshold N] [--ctlog-threshold N] [EXPECTED_DIGEST [PREDICATE_TYPE]]\n';

function usage(message) {
  process.stderr.write((message ? `verify-bundle.js: ${message}\n` : '') + USAGE);
  process.exit(2);
}

const OPTIONS = ['--trusted-root', '--identity', '--issuer', '--tlog-threshold', '--ctlog-threshold'];
const options = {};
const positional = [];
{
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (OPTIONS.includes(arg)) {
      if (i + 1 >= argv.length) usage(`${arg} needs a value`);
      if (arg in options) usage(`${arg} given twice`);
      options[arg] = argv[++i];
    } else if (arg.startsWith('--')) {
      usage(`unknown option ${arg}`);
    } else {
      positional.push(arg);
    }
  }
}

function threshold(name, dflt) {
  if (!(name in options)) return dflt;
  if (!/^\d+$/.test(options[name])) usage(`${name} must be a non-negative integer`);
  return Number.parseInt(options[name], 10);
}

const keyless = '--trusted-root' in options;
let bundlePath, keyPath, expectedDigestArg, predicateTypeArg;
if (keyless) {
  [bundlePath, expectedDigestArg, predicateTypeArg] = positional;
  if (!bundlePath || positional.length > 3) usage();
  if (!options['--identity'] || !options['--issuer']) usage('keyless mode needs --identity and --issuer');
} else {
  [bundlePath, keyPath, expectedDigestArg, predicateTypeArg] = positional;
  if (!bundlePath || !keyPath || positional.length > 4) usage();
  if (Object.keys(options).length) usage(`${Object.keys(options).join(', ')} only with --trusted-root`);
}
const tlogThreshold = threshold('--tlog-threshold', 1);
const ctlogThreshold = threshold('--ctlog-threshold', 1);
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

// Exact-string policy: @sigstore/verify treats policy.subjectAlternativeName as a regular expression.
const exactly = (value) => `^${value.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`;

let signerIdentity = null;
const seenHints = [];
if (keyless) {
  let trustMaterial;
  try {
    const root = TrustedRoot.fromJSON(JSON.parse(fs.readFileSync(options['--trusted-root'], 'utf8')));
    // No key finder: a bundle with a publicKey hint has no key to verify against in keyless mode.
    trustMaterial = toTrustMaterial(root, (hint) => {
      throw Object.assign(new Error(`keyless mode: bundle names public key ${hint}`), { code: 'PUBLIC_KEY_ERROR' });
    });
  } catch (e) {
    fail(`trusted root: ${e.message}`, e.code || 'TRUST_ROOT_ERROR');
  }
  const verifier = new Verifier(trustMaterial, { tlogThreshold, ctlogThreshold, timestampThreshold: 1 });
  const policy = {
    subjectAlternativeName: exactly(options['--identity']),
    extensions: { issuer: options['--issuer'] },
  };
  try {
    const entity = toSignedEntity(bundle);
    if (entity.key.$case !== 'certificate') {
      fail(`bundle verification material is ${entity.key.$case}, expected a certificate`, 'BUNDLE_ERROR');
    }
    const signer = verifier.verify(entity, policy);
    signerIdentity = {
      subjectAlternativeName: signer.identity && signer.identity.subjectAlternativeName,
      issuer: signer.identity && signer.identity.extensions && signer.identity.extensions.issuer,
    };
  } catch (e) {
    fail(describe(e), e.code || e.name);
  }
} else {
  let publicKey;
  try {
    publicKey = crypto.createPublicKey(fs.readFileSync(keyPath));
  } catch (e) {
    fail(`public key: ${e.message}`, 'KEY_ERROR');
  }

  // The trust material holds nothing but the configured key: no CAs, TSAs, Rekor or CT logs. The key finder is
  // called with the bundle's publicKey.hint and deliberately ignores it (hints are informational; never trust them).
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
    fail(describe(e), e.code || e.name);
  }
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

if (keyless) {
  out({ ok: true, subjects: subjectDigests, predicateType: statement.predicateType, signer: signerIdentity,
    tlogThreshold, ctlogThreshold }, 0);
}
out({ ok: true, subjects: subjectDigests, predicateType: statement.predicateType, hints: seenHints }, 0);
