//! From the provider's model to the load balancer's configuration. Pure: the provider takes a
//! snapshot of its load balancers, firewalls and server groups and [`build`] turns it into one
//! whole [`LbConfig`], which the provider applies (the load balancer diffs it against what runs).
//!
//! - Each listener of a load balancer is a listener bound to `address:port` (the load balancer
//!   spec's address, or the provider's `listen_address`), named `<account>/<lb>/<addr>:<port>`.
//! - Each cluster a load balancer routes to (path routes and the default) is a pool named
//!   `<account>/<lb>/<cluster>`. Its groups are the server groups of that cluster, in that
//!   account, that list the load balancer, oldest first; a server group being destroyed is left
//!   out. A group's backends are its instances that are up (passed their readiness check) and
//!   are not being removed by a resize.
//! - Each preview listener (`previewListeners`, blue/green's preview service) has the same
//!   routes, to pools named `<account>/<lb>/<cluster>/preview` that hold one group: the newest
//!   server group of the cluster with instances up, enabled or not, at full weight.
//! - Firewalls named by a load balancer become the allow and deny lists of its listeners (the
//!   lists of several firewalls are concatenated; deny wins, and an empty allow list allows every
//!   source not denied).
//! - Pools have no active health check of the load balancer's own: the provider registers only
//!   instances that pass their server group's check and rebuilds the configuration whenever one
//!   stops passing, and each server group of a cluster may check a different path.

use ferry_lb::{BackendConfig, GroupConfig, LbConfig, ListenerConfig, PoolConfig, RouteConfig};
use ferry_provider::{FirewallSpec, LoadBalancerSpec};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// Load balancers or firewalls by (account, name).
pub(crate) type ByName<T> = BTreeMap<(String, String), T>;

/// What [`build`] needs to know about one server group.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GroupView {
    pub account: String,
    pub name: String,
    pub cluster: String,
    pub sequence: u32,
    pub load_balancers: Vec<String>,
    pub enabled: bool,
    pub weight: u32,
    /// Instances that take traffic: (instance id, port).
    pub backends: Vec<(String, u16)>,
}

/// The pool that carries `cluster`'s traffic for load balancer `lb`.
pub(crate) fn pool_name(account: &str, lb: &str, cluster: &str) -> String {
    format!("{account}/{lb}/{cluster}")
}

/// The pool that carries `cluster`'s preview traffic for load balancer `lb`.
pub(crate) fn preview_pool_name(account: &str, lb: &str, cluster: &str) -> String {
    format!("{account}/{lb}/{cluster}/preview")
}

/// The clusters a load balancer sends traffic to.
pub(crate) fn clusters_of(lb: &LoadBalancerSpec) -> Vec<&str> {
    let mut clusters: Vec<&str> = lb
        .routes
        .iter()
        .map(|r| r.cluster.as_str())
        .chain(lb.default_cluster.as_deref())
        .collect();
    clusters.sort_unstable();
    clusters.dedup();
    clusters
}

/// The pools a server group is part of (to drain it).
pub(crate) fn pools_of(
    lbs: &ByName<LoadBalancerSpec>,
    account: &str,
    cluster: &str,
    load_balancers: &[String],
) -> Vec<String> {
    load_balancers
        .iter()
        .filter_map(|name| lbs.get(&(account.to_string(), name.clone())))
        .filter(|lb| clusters_of(lb).contains(&cluster))
        .map(|lb| pool_name(account, &lb.name, cluster))
        .collect()
}

/// The address a listener binds.
pub(crate) fn listener_ip(address: Option<&str>, default: IpAddr) -> Result<IpAddr, String> {
    match address {
        None | Some("") => Ok(default),
        Some(a) => a
            .parse()
            .map_err(|_| format!("\"{a}\" is not an IP address")),
    }
}

/// The whole load balancer configuration for a snapshot.
pub(crate) fn build(
    lbs: &ByName<LoadBalancerSpec>,
    firewalls: &ByName<FirewallSpec>,
    groups: &[GroupView],
    default_ip: IpAddr,
) -> LbConfig {
    let mut config = LbConfig::default();
    for ((account, name), lb) in lbs {
        let mut allow = Vec::new();
        let mut deny = Vec::new();
        for fw in &lb.firewalls {
            if let Some(f) = firewalls.get(&(account.clone(), fw.clone())) {
                allow.extend(f.allow.iter().copied());
                deny.extend(f.deny.iter().copied());
            }
        }
        let listeners = lb.listeners.iter().map(|l| (l, false));
        let previews = lb.preview_listeners.iter().map(|l| (l, true));
        for (listener, preview) in listeners.chain(previews) {
            // Addresses were checked when the load balancer was upserted.
            let ip = listener_ip(listener.address.as_deref(), default_ip).unwrap_or(default_ip);
            let bind = SocketAddr::new(ip, listener.port);
            let pool = |cluster: &str| {
                if preview {
                    preview_pool_name(account, name, cluster)
                } else {
                    pool_name(account, name, cluster)
                }
            };
            config.listeners.push(ListenerConfig {
                name: format!("{account}/{name}/{bind}"),
                bind,
                routes: lb
                    .routes
                    .iter()
                    .map(|r| RouteConfig {
                        path_prefix: r.path_prefix.clone(),
                        pool: pool(&r.cluster),
                    })
                    .collect(),
                default_pool: lb.default_cluster.as_deref().map(pool),
                allow: allow.clone(),
                deny: deny.clone(),
            });
        }
        for cluster in clusters_of(lb) {
            let mut members: Vec<&GroupView> = groups
                .iter()
                .filter(|g| {
                    g.account == *account
                        && g.cluster == cluster
                        && g.load_balancers.iter().any(|l| l == name)
                })
                .collect();
            members.sort_by_key(|g| g.sequence);
            if !lb.preview_listeners.is_empty() {
                // The newest server group with instances up, whether it takes traffic or not.
                let newest = members.iter().rev().find(|g| !g.backends.is_empty());
                config.pools.push(PoolConfig {
                    name: preview_pool_name(account, name, cluster),
                    health_check: None,
                    groups: newest
                        .map(|g| GroupConfig {
                            weight: 100,
                            enabled: true,
                            ..group_config(g)
                        })
                        .into_iter()
                        .collect(),
                });
            }
            config.pools.push(PoolConfig {
                name: pool_name(account, name, cluster),
                health_check: None,
                groups: members.into_iter().map(group_config).collect(),
            });
        }
    }
    config
}

fn group_config(g: &GroupView) -> GroupConfig {
    GroupConfig {
        name: g.name.clone(),
        weight: g.weight,
        enabled: g.enabled,
        backends: g
            .backends
            .iter()
            .map(|(id, port)| BackendConfig {
                id: id.clone(),
                addr: SocketAddr::from(([127, 0, 0, 1], *port)),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_provider::{Listener, PathRoute};

    fn lb(
        name: &str,
        port: u16,
        routes: &[(&str, &str)],
        default: Option<&str>,
    ) -> LoadBalancerSpec {
        LoadBalancerSpec {
            name: name.into(),
            application: "shop".into(),
            account: "local".into(),
            listeners: vec![Listener {
                port,
                address: None,
            }],
            routes: routes
                .iter()
                .map(|(p, c)| PathRoute {
                    path_prefix: (*p).into(),
                    cluster: (*c).into(),
                })
                .collect(),
            default_cluster: default.map(Into::into),
            firewalls: vec!["office".into()],
            preview_listeners: vec![],
        }
    }

    fn group(
        name: &str,
        cluster: &str,
        seq: u32,
        lbs: &[&str],
        backends: &[(&str, u16)],
    ) -> GroupView {
        GroupView {
            account: "local".into(),
            name: name.into(),
            cluster: cluster.into(),
            sequence: seq,
            load_balancers: lbs.iter().map(|s| s.to_string()).collect(),
            enabled: true,
            weight: 100,
            backends: backends.iter().map(|(i, p)| (i.to_string(), *p)).collect(),
        }
    }

    #[test]
    fn preview_listeners_route_to_the_newest_server_group_with_instances_up() {
        let mut spec = lb("web", 8080, &[("/kids", "shop-kids")], None);
        spec.firewalls.clear();
        spec.preview_listeners = vec![Listener {
            port: 8081,
            address: None,
        }];
        let mut lbs = ByName::new();
        lbs.insert(("local".into(), "web".into()), spec);
        let mut blue = group("shop-kids-v001", "shop-kids", 1, &["web"], &[("b", 20001)]);
        blue.weight = 100;
        let mut green = group("shop-kids-v002", "shop-kids", 2, &["web"], &[("g", 20002)]);
        green.enabled = false;
        // Newest, but nothing up yet: not the preview.
        let starting = group("shop-kids-v003", "shop-kids", 3, &["web"], &[]);
        let config = build(
            &lbs,
            &ByName::new(),
            &[blue, green, starting],
            IpAddr::from([127, 0, 0, 1]),
        );
        let preview = config
            .listeners
            .iter()
            .find(|l| l.bind.port() == 8081)
            .unwrap();
        assert_eq!(preview.routes[0].pool, "local/web/shop-kids/preview");
        let pool = config
            .pools
            .iter()
            .find(|p| p.name == "local/web/shop-kids/preview")
            .unwrap();
        assert_eq!(pool.groups.len(), 1);
        assert_eq!(pool.groups[0].name, "shop-kids-v002");
        assert!(
            pool.groups[0].enabled,
            "the preview takes its traffic while disabled"
        );
        // The active pool is unchanged: green is disabled there.
        let active = config
            .pools
            .iter()
            .find(|p| p.name == "local/web/shop-kids")
            .unwrap();
        assert_eq!(active.groups.len(), 3);
        assert!(!active.groups[1].enabled);
    }

    #[test]
    fn routes_pools_groups_and_firewalls() {
        let mut lbs = ByName::new();
        let spec = lb("web", 8080, &[("/kids", "shop-kids")], Some("shop-home"));
        lbs.insert(("local".into(), "web".into()), spec.clone());
        let mut fws = ByName::new();
        fws.insert(
            ("local".into(), "office".into()),
            FirewallSpec {
                name: "office".into(),
                application: "shop".into(),
                account: "local".into(),
                allow: vec!["10.0.0.0/8".parse().unwrap()],
                deny: vec!["10.9.0.0/16".parse().unwrap()],
            },
        );
        let groups = vec![
            group(
                "shop-kids-v001",
                "shop-kids",
                1,
                &["web"],
                &[("shop-kids-v001-0", 20001)],
            ),
            group("shop-kids-v000", "shop-kids", 0, &["web"], &[]),
            group(
                "shop-home-v000",
                "shop-home",
                0,
                &["web"],
                &[("shop-home-v000-0", 20002)],
            ),
            // Not behind `web`: left out.
            group("shop-mens-v000", "shop-home", 3, &[], &[("x", 1)]),
        ];
        let config = build(&lbs, &fws, &groups, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(config.listeners.len(), 1);
        let l = &config.listeners[0];
        assert_eq!(l.name, "local/web/127.0.0.1:8080");
        assert_eq!(l.bind, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(l.routes[0].pool, "local/web/shop-kids");
        assert_eq!(l.default_pool.as_deref(), Some("local/web/shop-home"));
        assert_eq!(l.allow.len(), 1);
        assert_eq!(l.deny.len(), 1);
        let names: Vec<&str> = config.pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["local/web/shop-home", "local/web/shop-kids"]);
        let kids = &config.pools[1];
        let groups: Vec<&str> = kids.groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(groups, ["shop-kids-v000", "shop-kids-v001"]);
        assert_eq!(
            kids.groups[1].backends[0].addr,
            "127.0.0.1:20001".parse().unwrap()
        );
        assert_eq!(config.pools[0].groups.len(), 1);
        assert_eq!(
            pools_of(&lbs, "local", "shop-kids", &["web".into(), "gone".into()]),
            vec!["local/web/shop-kids"]
        );
        assert!(pools_of(&lbs, "local", "other", &["web".into()]).is_empty());
    }

    #[test]
    fn listener_addresses() {
        let default = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(listener_ip(None, default), Ok(default));
        assert_eq!(
            listener_ip(Some("0.0.0.0"), default),
            Ok(IpAddr::from([0, 0, 0, 0]))
        );
        assert!(listener_ip(Some("localhost"), default).is_err());
    }
}
