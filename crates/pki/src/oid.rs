//! Object identifiers Puppet gives meaning to, and their short names.

/// `1.3.6.1.4.1.34380.1.1` — Puppet registered certificate extensions (`pp_role`, …).
pub const PP_REG_CERT_EXT: &str = "1.3.6.1.4.1.34380.1.1";
/// `1.3.6.1.4.1.34380.1.2` — Puppet private certificate extensions.
pub const PP_PRIV_CERT_EXT: &str = "1.3.6.1.4.1.34380.1.2";
/// `1.3.6.1.4.1.34380.1.3` — Puppet authorization extensions (`pp_cli_auth`, …).
pub const PP_AUTH_CERT_EXT: &str = "1.3.6.1.4.1.34380.1.3";
/// `pp_cli_auth`: grants use of the CA admin API. Never signed from a CSR.
pub const PP_CLI_AUTH: &str = "1.3.6.1.4.1.34380.1.3.39";
/// Subject alternative name.
pub const SUBJECT_ALT_NAME: &str = "2.5.29.17";
/// `pp_auth_auto_renew`: a CSR *attribute* (not an extension) Puppet 8 agents set to `true`
/// when they will renew their certificate themselves.
pub const PP_AUTH_AUTO_RENEW: &str = "1.3.6.1.4.1.34380.1.3.2";
/// PKCS#9 challengePassword, where autosign tokens travel.
pub const CHALLENGE_PASSWORD: &str = "1.2.840.113549.1.9.7";
/// Netscape comment, which puppetserver sets on every certificate it issues.
pub const NETSCAPE_COMMENT: &str = "2.16.840.1.113730.1.13";
/// The comment text puppetserver writes.
pub const NETSCAPE_COMMENT_TEXT: &str = "Puppet Server Internal Certificate";

/// Short names from Puppet's `puppet/ssl/oids.rb`, for the arcs a CA reports.
const SHORT_NAMES: &[(&str, &str)] = &[
    ("1.3.6.1.4.1.34380.1.1.1", "pp_uuid"),
    ("1.3.6.1.4.1.34380.1.1.2", "pp_instance_id"),
    ("1.3.6.1.4.1.34380.1.1.3", "pp_image_name"),
    ("1.3.6.1.4.1.34380.1.1.4", "pp_preshared_key"),
    ("1.3.6.1.4.1.34380.1.1.5", "pp_cost_center"),
    ("1.3.6.1.4.1.34380.1.1.6", "pp_product"),
    ("1.3.6.1.4.1.34380.1.1.7", "pp_project"),
    ("1.3.6.1.4.1.34380.1.1.8", "pp_application"),
    ("1.3.6.1.4.1.34380.1.1.9", "pp_service"),
    ("1.3.6.1.4.1.34380.1.1.10", "pp_employee"),
    ("1.3.6.1.4.1.34380.1.1.11", "pp_created_by"),
    ("1.3.6.1.4.1.34380.1.1.12", "pp_environment"),
    ("1.3.6.1.4.1.34380.1.1.13", "pp_role"),
    ("1.3.6.1.4.1.34380.1.1.14", "pp_software_version"),
    ("1.3.6.1.4.1.34380.1.1.15", "pp_department"),
    ("1.3.6.1.4.1.34380.1.1.16", "pp_cluster"),
    ("1.3.6.1.4.1.34380.1.1.17", "pp_provisioner"),
    ("1.3.6.1.4.1.34380.1.1.18", "pp_region"),
    ("1.3.6.1.4.1.34380.1.1.19", "pp_datacenter"),
    ("1.3.6.1.4.1.34380.1.1.20", "pp_zone"),
    ("1.3.6.1.4.1.34380.1.1.21", "pp_network"),
    ("1.3.6.1.4.1.34380.1.1.22", "pp_securitypolicy"),
    ("1.3.6.1.4.1.34380.1.1.23", "pp_cloudplatform"),
    ("1.3.6.1.4.1.34380.1.1.24", "pp_apptier"),
    ("1.3.6.1.4.1.34380.1.1.25", "pp_hostname"),
    ("1.3.6.1.4.1.34380.1.1.26", "pp_owner"),
    ("1.3.6.1.4.1.34380.1.3.1", "pp_authorization"),
    ("1.3.6.1.4.1.34380.1.3.2", "pp_auth_auto_renew"),
    ("1.3.6.1.4.1.34380.1.3.13", "pp_auth_role"),
    ("1.3.6.1.4.1.34380.1.3.39", "pp_cli_auth"),
];

/// Puppet's short name for `oid`, or the dotted form when it has none.
pub fn display_name(oid: &str) -> &str {
    SHORT_NAMES.iter().find(|(dotted, _)| *dotted == oid).map_or(oid, |(_, short)| short)
}

/// Whether `oid` lies strictly below `arc`.
pub fn is_under(oid: &str, arc: &str) -> bool {
    oid.strip_prefix(arc).is_some_and(|rest| rest.starts_with('.') && rest.len() > 1)
}

/// An extension under one of the three Puppet arcs (`pp_cli_auth` included).
pub fn is_puppet_extension(oid: &str) -> bool {
    is_under(oid, PP_REG_CERT_EXT)
        || is_under(oid, PP_PRIV_CERT_EXT)
        || is_under(oid, PP_AUTH_CERT_EXT)
}

/// The CSR extensions puppetserver signs: SAN and the three Puppet arcs, minus `pp_cli_auth`.
pub fn is_signable_extension(oid: &str) -> bool {
    if oid == PP_CLI_AUTH {
        return false;
    }
    oid == SUBJECT_ALT_NAME || is_puppet_extension(oid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitelist_follows_puppetserver() {
        let cases = [
            ("2.5.29.17", true),
            ("1.3.6.1.4.1.34380.1.1.13", true),
            ("1.3.6.1.4.1.34380.1.2.1", true),
            ("1.3.6.1.4.1.34380.1.3.1", true),
            ("1.3.6.1.4.1.34380.1.3.39", false),
            ("1.3.6.1.4.1.34380.1.1", false),
            ("1.3.6.1.4.1.34380.1.10.1", false),
            ("2.5.29.15", false),
            ("2.5.29.19", false),
            ("2.5.29.37", false),
        ];
        for (oid, expected) in cases {
            assert_eq!(is_signable_extension(oid), expected, "{oid}");
        }
    }

    #[test]
    fn short_names() {
        assert_eq!(display_name(PP_CLI_AUTH), "pp_cli_auth");
        assert_eq!(display_name("1.3.6.1.4.1.34380.1.1.13"), "pp_role");
        assert_eq!(display_name("1.2.3"), "1.2.3");
    }
}
