-- crossbar's CA state, version 1. The CA's key is never here: each CA node reads it from its
-- own cadir (ca_key.pem, next to ca_crt.pem).

-- The CA this database belongs to (its certificate, DER), and the CRLs of the CAs above it
-- (PEM, served after the CA's own CRL).
CREATE TABLE ca_meta (
    key   text PRIMARY KEY,
    value bytea NOT NULL
);

-- Pending certificate requests (puppetserver's requests/).
CREATE TABLE ca_request (
    certname     text PRIMARY KEY,
    pem          bytea NOT NULL,
    submitted_at timestamptz NOT NULL DEFAULT now(),
    submitted_by text NOT NULL
);

-- Every certificate ever issued (puppetserver's inventory.txt). Serials are big-endian bytes
-- without leading zeros: random 126-bit ones for certificates signed here, puppetserver's
-- sequential ones for imported ones. An imported inventory line may have no PEM.
CREATE TABLE ca_cert (
    serial     bytea PRIMARY KEY CHECK (octet_length(serial) BETWEEN 1 AND 20),
    certname   text NOT NULL,
    pem        bytea,
    not_before timestamptz NOT NULL,
    not_after  timestamptz NOT NULL,
    issued_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    issued_by  text NOT NULL,
    kind       text NOT NULL CHECK (kind IN ('sign', 'renew', 'import')),
    revoked_at timestamptz
);
CREATE INDEX ca_cert_by_name ON ca_cert (certname, issued_at DESC);
CREATE INDEX ca_cert_by_expiry ON ca_cert (not_after);

-- The certificate GET certificate/<name> returns (puppetserver's signed/<name>.pem).
CREATE TABLE ca_current (
    certname   text PRIMARY KEY,
    serial     bytea NOT NULL REFERENCES ca_cert (serial),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Every CRL published; the newest (highest number) is the one served. Numbers only grow:
-- each is above the last and at least the time of signing in milliseconds. Times here are
-- clock_timestamp(): when the row was written (after the lock), not when its transaction began.
CREATE TABLE ca_crl (
    number      bigint PRIMARY KEY,
    this_update timestamptz NOT NULL,
    next_update timestamptz NOT NULL,
    der         bytea NOT NULL,
    entries     integer NOT NULL,
    built_by    text NOT NULL,
    built_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Who did what, when: one row per CA write.
CREATE TABLE ca_audit (
    id       bigserial PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT clock_timestamp(),
    node     text NOT NULL,
    actor    text NOT NULL,
    action   text NOT NULL,
    certname text,
    serial   bytea,
    detail   text
);
CREATE INDEX ca_audit_at ON ca_audit (at);
