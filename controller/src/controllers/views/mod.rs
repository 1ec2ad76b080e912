//! What the controllers compute for the API's `plan` and `log` subresources
//! ([`crate::apiserver::views`]): [`ControllerViews`] implements [`Views`] over the controllers'
//! [`Context`] (the in-process client, the host pool, the hash key), so a Stack's plan is the one
//! the Stack controller would execute (`plan_stack`), a Lease's is what the Lease controller
//! would do next (`lease::plan::plan_lease` over the store's Leases and Hosts and a fresh
//! listing of the Lease's host), and logs come from the containers berth's labels attribute to
//! the object (for a Lease, those of its active release on its host). `berth serve` hands it to
//! the API once the context exists.
//!
//! The conversion to the stable wire forms lives in [`plan_doc`] (Stack plans) and [`logs`]
//! (container selection and log records), both pure.

pub mod logs;
pub mod plan_doc;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use berth_crds::Stack;
use berth_crds::host::Host;
use berth_crds::lease::{Lease, LeasePhase};
use berth_crds::logs::LogRecord;
use berth_crds::plan::{PlanItem, PlanList};
use futures::stream::BoxStream;
use kube::api::{Api, ListParams};

use crate::apiserver::views::{LogRequest, ViewError, Views};
use crate::controllers::context::Context;
use crate::controllers::lease::plan::{LeasePlanInput, Observed, host_to_observe, plan_lease};
use crate::controllers::lease::render::{LeaseRenderContext, render};
use crate::controllers::lease::{self, placement, status as lease_status};
use crate::controllers::pool::{HostHandle, Reachability};
use crate::controllers::stack;
use crate::docker::DockerApi;

/// How old a host listing may be to pick the containers whose logs are read.
const LISTING_MAX_AGE: Duration = Duration::from_secs(1);

/// The controllers' [`Views`].
#[derive(Debug)]
pub struct ControllerViews {
    ctx: Arc<Context>,
}

impl ControllerViews {
    /// Views over the controllers' context.
    pub fn new(ctx: Arc<Context>) -> Self {
        Self { ctx }
    }

    async fn stack(&self, namespace: &str, name: &str) -> Result<Stack, ViewError> {
        Api::<Stack>::namespaced(self.ctx.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|e| ViewError::Failed(format!("reading Stack {namespace}/{name}: {e}")))?
            .ok_or_else(|| ViewError::NotFound(format!("stacks.berth.dev {name:?} not found in namespace {namespace}")))
    }

    async fn lease(&self, namespace: &str, name: &str) -> Result<Lease, ViewError> {
        Api::<Lease>::namespaced(self.ctx.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|e| ViewError::Failed(format!("reading Lease {namespace}/{name}: {e}")))?
            .ok_or_else(|| ViewError::NotFound(format!("leases.berth.dev {name:?} not found in namespace {namespace}")))
    }

    /// What the Lease controller would do next for Lease `namespace/name`: placement over the
    /// store's Hosts and Leases (without the controller's in-memory reservations, which last
    /// only until a placement reaches the store), the next release rendered with the
    /// installation's hash key, and a listing of the Lease's host taken now.
    async fn plan_lease(&self, namespace: &str, name: &str) -> Result<PlanList, ViewError> {
        let lease = self.lease(namespace, name).await?;
        let failed = |what: &str| {
            let what = what.to_string();
            move |e: kube::Error| ViewError::Failed(format!("cannot plan Lease {namespace}/{name}: {what}: {e}"))
        };
        let client = self.ctx.client.clone();
        let leases =
            Api::<Lease>::all(client.clone()).list(&ListParams::default()).await.map_err(failed("listing Leases"))?;
        let hosts =
            Api::<Host>::all(client.clone()).list(&ListParams::default()).await.map_err(failed("listing Hosts"))?;
        let config = &self.ctx.config.leases;
        let candidates = placement::candidates(
            leases.items.iter(),
            hosts.items.iter(),
            &Default::default(),
            &lease::host_links(&self.ctx.pool),
            &config.skus,
        );
        let restore_host = match &lease.spec.restore_from {
            Some(from) => lease::retained_host(&self.ctx, namespace, from).await,
            None => None,
        };
        let references = lease::fetch_references(&client, &lease)
            .await
            .map_err(|e| ViewError::Failed(format!("cannot plan Lease {namespace}/{name}: {e}")))?;
        let rc = LeaseRenderContext {
            instance: &self.ctx.instance,
            hash_key: &self.ctx.hash_key,
            config,
            references: &references,
        };
        let revision = lease_status::next_revision(&lease.status.clone().unwrap_or_default());
        let rendered = render(&lease, revision, &rc).map_err(|e| e.to_string());
        let host = host_to_observe(&lease, config, &candidates, restore_host.as_deref());
        let listing = match &host {
            None => None,
            Some(h) => Some(match self.ctx.pool.get(h) {
                Ok(handle) => handle.observe(&self.ctx.instance, Duration::ZERO).await.map_err(|e| e.to_string()),
                Err(r) => Err(unreachable_why(h, r)),
            }),
        };
        let observed = match &listing {
            None => Observed::Nothing,
            Some(Ok(snapshot)) => Observed::Listing(snapshot),
            Some(Err(why)) => Observed::Unreachable(why),
        };
        let plan = plan_lease(&LeasePlanInput {
            lease: &lease,
            now: jiff::Timestamp::now(),
            config,
            rendered: rendered.as_ref().map_err(String::as_str),
            candidates: &candidates,
            restore_host: restore_host.as_deref(),
            observed,
        });
        Ok(PlanList::new(vec![PlanItem::Lease(plan)]))
    }

    async fn stack_log(
        &self,
        namespace: &str,
        name: &str,
        request: &LogRequest,
    ) -> Result<BoxStream<'static, LogRecord>, ViewError> {
        let stack = self.stack(namespace, name).await?;
        let owner = format!("Stack {namespace}/{name}");
        let uid = stack.metadata.uid.clone().unwrap_or_default();
        let services: BTreeSet<String> = stack.spec.services.iter().map(|s| s.name.clone()).collect();
        // The hosts status names; before the first status, every connected host.
        let mut hosts: Vec<String> = stack.status.iter().flat_map(|s| s.hosts.iter().map(|h| h.host.clone())).collect();
        hosts.sort();
        hosts.dedup();
        if hosts.is_empty() {
            hosts = self
                .ctx
                .pool
                .hosts()
                .into_iter()
                .filter(|(_, r)| *r == Reachability::Reachable)
                .map(|(n, _)| n)
                .collect();
        }
        self.read_logs(&owner, &uid, &services, &hosts, None, request).await
    }

    /// The logs of a Lease's containers on its host: those of its active release (the last one
    /// with outcome Active), or every release's when none is active.
    async fn lease_log(
        &self,
        namespace: &str,
        name: &str,
        request: &LogRequest,
    ) -> Result<BoxStream<'static, LogRecord>, ViewError> {
        let lease = self.lease(namespace, name).await?;
        let owner = format!("Lease {namespace}/{name}");
        let uid = lease.metadata.uid.clone().unwrap_or_default();
        let services: BTreeSet<String> = lease.spec.services.iter().map(|s| s.name.clone()).collect();
        let st = lease.status.clone().unwrap_or_default();
        let phase = st.phase.unwrap_or(LeasePhase::Pending);
        if phase.is_terminal() {
            return Err(ViewError::NotFound(format!(
                "{owner} is {}: its containers were removed, so there are no logs to read; `berth describe lease/{name}` \
                 shows its last diagnostics",
                phase.as_str()
            )));
        }
        let Some(host) = st.host.clone() else {
            return Err(ViewError::NotFound(format!(
                "{owner} is {} and not placed on a host yet, so it has no containers; see `berth plan lease/{name}` \
                 for why, or wait until it is Ready (`berth wait --for=condition=Ready lease/{name}`)",
                phase.as_str()
            )));
        };
        let active = lease_status::active_release(&st).map(|r| r.revision);
        self.read_logs(&owner, &uid, &services, &[host], Some(active), request).await
    }

    /// Reads the logs the request selects among the containers of owner `uid` on `hosts` (for a
    /// Lease, `release` holds its active release: `Some(None)` when none is active).
    async fn read_logs(
        &self,
        owner: &str,
        uid: &str,
        services: &BTreeSet<String>,
        hosts: &[String],
        release: Option<Option<i64>>,
        request: &LogRequest,
    ) -> Result<BoxStream<'static, LogRecord>, ViewError> {
        let mut targets: Vec<(logs::LogTarget, Arc<dyn DockerApi>)> = Vec::new();
        let mut unreachable = Vec::new();
        let mut seen = Vec::new();
        for host in hosts {
            let handle: Arc<HostHandle> = match self.ctx.pool.get(host) {
                Ok(h) => h,
                Err(r) => {
                    unreachable.push((host.clone(), unreachable_why(host, r)));
                    continue;
                }
            };
            match handle.observe(&self.ctx.instance, LISTING_MAX_AGE).await {
                Ok(snapshot) => {
                    let containers = match release {
                        Some(active) => logs::of_release(&snapshot.containers, active),
                        None => snapshot.containers.clone(),
                    };
                    let all = logs::select(host, &containers, uid, &LogRequest::default());
                    let chosen = logs::select(host, &containers, uid, request);
                    seen.extend(all);
                    targets.extend(chosen.into_iter().map(|t| (t, handle.docker.clone())));
                }
                Err(e) => unreachable.push((host.clone(), format!("listing containers failed: {e}"))),
            }
        }
        if targets.is_empty() {
            if !unreachable.is_empty() {
                return Err(ViewError::Unavailable(format!(
                    "cannot read the logs of {owner}: {}; check the Hosts with `berth get hosts`",
                    unreachable.iter().map(|(h, why)| format!("host {h}: {why}")).collect::<Vec<_>>().join("; ")
                )));
            }
            return Err(ViewError::NotFound(logs::nothing_selected(owner, request, services, &seen)));
        }
        // Hosts that cannot be read are said in the stream, after the containers that can.
        let extra: Vec<LogRecord> = unreachable
            .iter()
            .map(|(host, why)| LogRecord {
                type_: berth_crds::logs::LogRecordType::Error,
                host: host.clone(),
                service: String::new(),
                replica: 0,
                container: String::new(),
                stream: None,
                time: None,
                text: format!("cannot read the logs on host {host}: {why}"),
            })
            .collect();
        let now = jiff::Timestamp::now().as_second();
        Ok(logs::stream(targets, &logs::options(request, now), extra))
    }
}

/// Why a host of the pool cannot be used, in words.
fn unreachable_why(host: &str, r: Reachability) -> String {
    match r {
        Reachability::Unreachable(why) => why,
        Reachability::Reachable => format!("host {host} is not connected"),
    }
}

fn not_served(kind: &str, what: &str) -> ViewError {
    ViewError::NotFound(format!("{what} of {kind} objects are not served by this berth version"))
}

#[async_trait::async_trait]
impl Views for ControllerViews {
    async fn plan(&self, kind: &str, namespace: &str, name: &str) -> Result<PlanList, ViewError> {
        match kind {
            "Stack" => {
                let stack = self.stack(namespace, name).await?;
                let plans = stack::plan_stack(&self.ctx, &stack)
                    .await
                    .map_err(|e| ViewError::Failed(format!("cannot plan Stack {namespace}/{name}: {e}")))?;
                Ok(PlanList::new(vec![PlanItem::Stack(plan_doc::stack_plan(&stack, &plans))]))
            }
            "Lease" => self.plan_lease(namespace, name).await,
            _ => Err(not_served(kind, "plans")),
        }
    }

    async fn log(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        request: &LogRequest,
    ) -> Result<BoxStream<'static, LogRecord>, ViewError> {
        match kind {
            "Stack" => self.stack_log(namespace, name, request).await,
            "Lease" => self.lease_log(namespace, name, request).await,
            _ => Err(not_served(kind, "logs")),
        }
    }
}
