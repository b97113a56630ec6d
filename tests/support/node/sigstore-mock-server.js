#!/usr/bin/env node
/*
 * A local, offline Sigstore instance for the ociart tests: Fulcio (CA + CT log) and Rekor v1 from @sigstore/mock,
 * served on 127.0.0.1 (port chosen by the OS).
 *
 * Usage: node sigstore-mock-server.js [--rekor-time-skew=<seconds>]
 *   (or env SIGSTORE_MOCK_REKOR_TIME_SKEW=<seconds>): Rekor's integratedTime (SET, checkpoint) is shifted by that
 *   many seconds, so a certificate can be logged outside its 10-minute validity.
 *
 * Prints one JSON line on stdout once listening:
 *   {"url": "http://127.0.0.1:<port>",
 *    "fulcio_root_der": <b64 DER self-signed root>, "fulcio_subject": {"commonName", "organization"},
 *    "rekor_key_der": <b64 SPKI DER>, "rekor_log_id": <b64 sha256(SPKI DER)>,
 *    "ctlog_key_der": <b64 SPKI DER>, "ctlog_log_id": <b64 log ID>,
 *    "rekor_time_skew": <seconds>, "started": <ISO time>}
 *
 * Endpoints (everything else is 404):
 *   POST /api/v2/signingCert  Fulcio. sigstore-python sends the OIDC token as "Authorization: Bearer" and the CSR as
 *                             base64 of a PEM; the mock wants credentials.oidcIdentityToken and a PEM CSR (adapter 1).
 *                             The SAN is the token's "sub" claim, the issuer extensions its "iss".
 *   POST /api/v1/log/entries  Rekor v1. Proposed entries are canonicalised as real Rekor v1 does before logging
 *                             (adapter 2): dsse/0.0.1 → {envelopeHash, payloadHash, signatures[{signature, verifier}]},
 *                             hashedrekord/0.0.1 → {data.hash, signature{content, publicKey.content}}.
 * Exits when stdin closes or on SIGTERM/SIGINT.
 */
'use strict';

const crypto = require('crypto');
const http = require('http');
const mock = require('@sigstore/mock');

const SIGNING_CERT_PATH = '/api/v2/signingCert';
const REKOR_ENTRIES_PATH = '/api/v1/log/entries';
const MAX_BODY = 1 << 20;

function parseSkew() {
  let value = process.env.SIGSTORE_MOCK_REKOR_TIME_SKEW || '0';
  for (const arg of process.argv.slice(2)) {
    const m = /^--rekor-time-skew=(-?\d+)$/.exec(arg);
    if (m) {
      value = m[1];
    } else {
      throw new Error(`unknown argument ${arg}`);
    }
  }
  const skew = Number.parseInt(value, 10);
  if (!Number.isFinite(skew)) throw new Error(`bad rekor time skew ${value}`);
  return skew;
}

const sha256hex = (data) => crypto.createHash('sha256').update(data).digest('hex');
const spkiDer = (keyPair) => keyPair.publicKey.export({ format: 'der', type: 'spki' });

function jsonError(statusCode, message) {
  return { statusCode, response: JSON.stringify({ code: statusCode, message }), contentType: 'application/json' };
}

// Adapter 1: sigstore-python's Fulcio v2 request → the shape @sigstore/mock's handler parses.
function adaptFulcioRequest(body, headers) {
  const req = JSON.parse(body.toString('utf8'));
  const auth = headers.authorization || '';
  const m = /^Bearer\s+(\S+)$/i.exec(auth);
  const token = (req.credentials && req.credentials.oidcIdentityToken) || (m && m[1]);
  if (!token) throw new Error('missing OIDC identity token');
  let csr = req.certificateSigningRequest;
  if (typeof csr !== 'string') throw new Error('missing certificateSigningRequest');
  if (!csr.includes('-----BEGIN')) csr = Buffer.from(csr, 'base64').toString('utf8');
  return JSON.stringify({ credentials: { oidcIdentityToken: token }, certificateSigningRequest: csr });
}

// Adapter 2: what real Rekor v1 stores as the canonicalized body of an entry.
function canonicalRekorEntry(body) {
  const entry = JSON.parse(body.toString('utf8'));
  if (entry.kind === 'dsse') {
    const content = entry.spec && entry.spec.proposedContent;
    if (!content || typeof content.envelope !== 'string' || !Array.isArray(content.verifiers)) {
      throw new Error('dsse entry without proposedContent{envelope, verifiers}');
    }
    const envelope = JSON.parse(content.envelope);
    const payload = Buffer.from(envelope.payload, 'base64');
    if (content.verifiers.length !== 1) throw new Error('dsse entry: exactly one verifier supported');
    return {
      apiVersion: entry.apiVersion || '0.0.1',
      kind: 'dsse',
      spec: {
        envelopeHash: { algorithm: 'sha256', value: sha256hex(Buffer.from(content.envelope, 'utf8')) },
        payloadHash: { algorithm: 'sha256', value: sha256hex(payload) },
        signatures: envelope.signatures.map((s) => ({ signature: s.sig, verifier: content.verifiers[0] })),
      },
    };
  }
  if (entry.kind === 'hashedrekord') {
    const spec = entry.spec || {};
    return {
      apiVersion: entry.apiVersion || '0.0.1',
      kind: 'hashedrekord',
      spec: {
        data: { hash: { algorithm: spec.data.hash.algorithm, value: spec.data.hash.value } },
        signature: { content: spec.signature.content, publicKey: { content: spec.signature.publicKey.content } },
      },
    };
  }
  throw new Error(`unsupported entry kind ${entry.kind}`);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        reject(new Error('request body too large'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

async function main() {
  const skew = parseSkew();
  const server = http.createServer();
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const url = `http://127.0.0.1:${server.address().port}`;

  // Separate keys for the CA, the CT log and the transparency log.
  const caKeys = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const ctKeys = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const tlogKeys = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });

  const ctlog = await mock.initializeCTLog(ctKeys);
  const ca = await mock.initializeCA(caKeys, ctlog);
  const tlog = await mock.initializeTLog(url, tlogKeys);
  if (skew !== 0) {
    // TLogImpl reads the time through this property for integratedTime, the SET and the checkpoint.
    tlog.getCurrentTime = () => Date.now() + skew * 1000;
  }
  const fulcio = mock.fulcioHandler(ca, { strict: true });
  const rekor = mock.rekorHandler(tlog, { strict: true });

  server.on('request', async (req, res) => {
    let result;
    try {
      const body = await readBody(req);
      const path = new URL(req.url, url).pathname;
      if (req.method === 'POST' && path === SIGNING_CERT_PATH) {
        result = await fulcio.fn(adaptFulcioRequest(body, req.headers));
      } else if (req.method === 'POST' && path === REKOR_ENTRIES_PATH) {
        result = await rekor.fn(JSON.stringify(canonicalRekorEntry(body)));
      } else {
        result = jsonError(404, `not found: ${req.method} ${path}`);
      }
      if (result.statusCode >= 400 && (result.contentType || '') !== 'application/json') {
        result = jsonError(result.statusCode, String(result.response));
      }
    } catch (e) {
      result = jsonError(400, e instanceof Error ? e.message : String(e));
    }
    res.writeHead(result.statusCode, { 'Content-Type': result.contentType || 'text/plain' });
    res.end(result.response);
  });

  const rekorKey = spkiDer(tlogKeys);
  const info = {
    url,
    fulcio_root_der: ca.rootCertificate.toString('base64'),
    fulcio_subject: { commonName: 'sigstore', organization: 'sigstore.mock' },
    rekor_key_der: rekorKey.toString('base64'),
    rekor_log_id: crypto.createHash('sha256').update(rekorKey).digest('base64'),
    ctlog_key_der: Buffer.from(ctlog.publicKey).toString('base64'),
    ctlog_log_id: Buffer.from(ctlog.logID).toString('base64'),
    rekor_time_skew: skew,
    started: new Date().toISOString(),
  };
  process.stdout.write(JSON.stringify(info) + '\n');

  const stop = () => server.close(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdin.on('end', stop);
  process.stdin.resume();
}

main().catch((e) => {
  process.stderr.write(`sigstore-mock-server: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
