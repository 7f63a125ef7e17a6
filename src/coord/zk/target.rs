//! The `zk://host:port[,host:port...]/path` URL: parsing and the paths derived from it.

/// `zk://host:port[,host:port...]/path`, the URL form of the agent's `--master` flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkTarget {
    /// `host:port` pairs, in order.
    pub hosts: Vec<String>,
    /// The root path (absolute, no trailing slash; `/` allowed).
    pub path: String,
}

/// A `coordination` value that is not a ZooKeeper URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a ZooKeeper URL: {why}; use zk://host:port[,host:port...]/path")]
pub struct ZkUrlError {
    /// The value.
    pub value: String,
    /// What is wrong with it.
    pub why: String,
}

impl ZkTarget {
    /// Parses `zk://host:port[,host:port...]/path`. A missing path means `/`; a trailing slash is
    /// dropped. Credentials (`user:pass@`) are refused: this layer does not authenticate.
    pub fn parse(value: &str) -> Result<Self, ZkUrlError> {
        let err = |why: String| ZkUrlError {
            value: value.to_owned(),
            why,
        };
        let rest = value
            .strip_prefix("zk://")
            .ok_or_else(|| err("it does not start with zk://".into()))?;
        let (hosts, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if hosts.is_empty() {
            return Err(err("it names no host:port".into()));
        }
        if hosts.contains('@') {
            return Err(err("credentials (user:password@) are not supported".into()));
        }
        let mut parsed = Vec::new();
        for h in hosts.split(',') {
            if h.is_empty() {
                return Err(err("its host list has an empty entry".into()));
            }
            let (host, port) = h
                .rsplit_once(':')
                .ok_or_else(|| err(format!("{h:?} has no :port")))?;
            if host.is_empty() {
                return Err(err(format!("{h:?} has no host name")));
            }
            if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(err(format!(
                    "host {host:?} contains a blank or control character"
                )));
            }
            match port.parse::<u16>() {
                Ok(p) if p != 0 => {}
                _ => {
                    return Err(err(format!(
                        "{h:?}: port {port:?} is not a number from 1 to 65535"
                    )))
                }
            }
            parsed.push(h.to_owned());
        }
        let path = if path == "/" {
            path
        } else {
            path.strip_suffix('/').unwrap_or(path)
        };
        if path != "/" {
            for seg in path[1..].split('/') {
                if seg.is_empty() || seg == "." || seg == ".." {
                    return Err(err(format!(
                        "path {path:?} has an empty, \".\" or \"..\" component"
                    )));
                }
                if seg.chars().any(char::is_control) {
                    return Err(err(format!("path {path:?} contains a control character")));
                }
            }
        }
        Ok(ZkTarget {
            hosts: parsed,
            path: path.to_owned(),
        })
    }

    /// The node under which volumes live: `<path>/volumes`.
    pub(super) fn volumes_root(&self) -> String {
        format!("{}/volumes", self.path.trim_end_matches('/'))
    }
}

impl std::fmt::Display for ZkTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "zk://{}{}", self.hosts.join(","), self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ZkTarget {
        ZkTarget::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn why(s: &str) -> String {
        match ZkTarget::parse(s) {
            Ok(t) => panic!("{s} parsed as {t:?}"),
            Err(e) => {
                assert_eq!(e.value, s);
                e.why
            }
        }
    }

    #[test]
    fn parses_hosts_and_path() {
        let t = parse("zk://zk1:2181,zk2:2182,10.0.0.3:2181/mesos/dvdi");
        assert_eq!(t.hosts, ["zk1:2181", "zk2:2182", "10.0.0.3:2181"]);
        assert_eq!(t.path, "/mesos/dvdi");
        assert_eq!(
            t.to_string(),
            "zk://zk1:2181,zk2:2182,10.0.0.3:2181/mesos/dvdi"
        );
        assert_eq!(t.volumes_root(), "/mesos/dvdi/volumes");
    }

    #[test]
    fn root_path_trailing_slash_and_no_path_all_mean_the_given_root() {
        assert_eq!(parse("zk://h:1/").path, "/");
        assert_eq!(parse("zk://h:1").path, "/");
        assert_eq!(parse("zk://h:1").volumes_root(), "/volumes");
        assert_eq!(parse("zk://h:1/a/b/").path, "/a/b");
        assert_eq!(parse("zk://[::1]:2181/x").hosts, ["[::1]:2181"]);
    }

    #[test]
    fn refuses_what_is_not_a_zookeeper_url() {
        assert!(why("h:2181/x").contains("zk://"));
        assert!(why("http://h:2181/x").contains("zk://"));
        assert!(why("zk:///x").contains("no host"));
        assert!(why("zk://").contains("no host"));
        assert!(why("zk://h/x").contains("no :port"));
        assert!(why("zk://:2181/x").contains("no host name"));
        assert!(why("zk://h:abc/x").contains("port \"abc\""));
        assert!(why("zk://h:0/x").contains("port \"0\""));
        assert!(why("zk://h:65536/x").contains("65536"));
        assert!(why("zk://h:1,,g:2/x").contains("empty entry"));
        assert!(why("zk://h:1,/x").contains("empty entry"));
        assert!(why("zk://u:p@h:1/x").contains("credentials"));
        assert!(why("zk://h:1//x").contains("empty"));
        assert!(why("zk://h:1/a/../b").contains("\"..\""));
        assert!(why("zk://h 1:1/x").contains("blank"));
    }

    #[test]
    fn error_message_says_what_to_use() {
        let e = ZkTarget::parse("zk://h/x").unwrap_err().to_string();
        assert!(e.contains("\"zk://h/x\""), "{e}");
        assert!(e.contains("use zk://host:port"), "{e}");
    }
}
