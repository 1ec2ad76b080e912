//! What the controllers compute for the API's `plan` and `log` subresources
//! ([`crate::apiserver::views`]): [`ControllerViews`] implements [`Views`] over the controllers'
//! [`Context`] (the in-process client, the host pool, the hash key), so a plan is the one the
//! Stack controller would execute (`plan_stack`) and logs come from the containers berth's labels
//! attribute to the object. `berth serve` hands it to the API once the context exists.
//!
//! The conversion to the stable wire forms lives in [`plan_doc`] (plans) and [`logs`] (container
//! selection and log records), both pure.

pub mod logs;
pub mod plan_doc;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use berth_crds::Stack;
use berth_crds::logs::LogRecord;
use berth_crds::plan::{PlanItem, PlanList};
use futures::stream::BoxStream;
use kube::api::Api;

use crate::apiserver::views::{LogRequest, ViewError, Views};
use crate::controllers::context::Context;
use crate::controllers::pool::Reachability;
use crate::controllers::stack;

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
}

fn not_served(kind: &str, what: &str) -> ViewError {
    ViewError::NotFound(format!("{what} of {kind} objects are not served by this berth version"))
}

#[async_trait::async_trait]
impl Views for ControllerViews {
    async fn plan(&self, kind: &str, namespace: &str, name: &str) -> Result<PlanList, ViewError> {
        if kind != "Stack" {
            return Err(not_served(kind, "plans"));
        }
        let stack = self.stack(namespace, name).await?;
        let plans = stack::plan_stack(&self.ctx, &stack)
            .await
            .map_err(|e| ViewError::Failed(format!("cannot plan Stack {namespace}/{name}: {e}")))?;
        Ok(PlanList::new(vec![PlanItem::Stack(plan_doc::stack_plan(&stack, &plans))]))
    }

    async fn log(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        request: &LogRequest,
    ) -> Result<BoxStream<'static, LogRecord>, ViewError> {
        if kind != "Stack" {
            return Err(not_served(kind, "logs"));
        }
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
        let mut targets = Vec::new();
        let mut unreachable = Vec::new();
        let mut seen = Vec::new();
        for host in &hosts {
            let handle = match self.ctx.pool.get(host) {
                Ok(h) => h,
                Err(Reachability::Unreachable(why)) => {
                    unreachable.push((host.clone(), why));
                    continue;
                }
                Err(Reachability::Reachable) => continue,
            };
            match handle.observe(&self.ctx.instance, LISTING_MAX_AGE).await {
                Ok(snapshot) => {
                    let all = logs::select(host, &snapshot.containers, &uid, &LogRequest::default());
                    let chosen = logs::select(host, &snapshot.containers, &uid, request);
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
            return Err(ViewError::NotFound(logs::nothing_selected(&owner, request, &services, &seen)));
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
