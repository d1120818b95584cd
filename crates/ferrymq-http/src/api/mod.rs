//! The management API's routes, one module per resource.

pub mod bindings;
pub mod connections;
pub mod definitions;
pub mod exchanges;
pub mod federation;
pub mod health;
pub mod limits;
pub mod overview;
pub mod parameters;
pub mod policies;
pub mod queues;
pub mod users;
pub mod vhosts;

use crate::error::ApiResult;
use crate::{HttpState, Routes};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Json;
use serde_json::Value;
use std::sync::Arc;

/// Shared state as handlers extract it.
pub type St = axum::extract::State<Arc<HttpState>>;

/// A JSON answer.
pub type JsonResult = ApiResult<Json<Value>>;

/// 201 when something was created, 204 when an existing object was updated.
pub fn created_or_updated(created: bool) -> Response {
    if created {
        StatusCode::CREATED.into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}

/// The vhosts a listing covers: all the caller may see, or just `only`.
pub fn visible_vhosts(
    s: &HttpState,
    caller: &crate::auth::Caller,
    only: Option<&str>,
) -> Vec<Arc<ferrymq_broker::vhost::VHost>> {
    s.broker
        .vhosts()
        .into_iter()
        .filter(|v| only.is_none_or(|o| o == v.name) && caller.sees_vhost(s, &v.name))
        .collect()
}

/// 204 No Content.
pub fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// Every route of the API.
pub fn routes(r: Routes) -> Routes {
    use bindings as b;
    use connections as c;
    use exchanges as e;
    use parameters as pa;
    use policies as po;
    use queues as q;
    use users as u;
    use vhosts as v;
    r.add(
        "/api/overview",
        &["GET"],
        "Broker-wide totals, rates and listeners",
        get(overview::overview),
    )
    .add(
        "/api/cluster-name",
        &["GET"],
        "The cluster name",
        get(overview::cluster_name),
    )
    .add(
        "/api/whoami",
        &["GET"],
        "The authenticated user and its tags",
        get(overview::whoami),
    )
    .add(
        "/api/nodes",
        &["GET"],
        "The node (FerryMQ runs as one node)",
        get(overview::nodes),
    )
    .add(
        "/api/nodes/{node}",
        &["GET"],
        "One node",
        get(overview::node),
    )
    .add(
        "/api/extensions",
        &["GET"],
        "Management UI extensions (none)",
        get(overview::extensions),
    )
    .add(
        "/api/connections",
        &["GET"],
        "Client connections",
        get(c::list),
    )
    .add(
        "/api/vhosts/{vhost}/connections",
        &["GET"],
        "Connections of a vhost",
        get(c::list_vhost),
    )
    .add(
        "/api/connections/{name}",
        &["GET", "DELETE"],
        "One connection; DELETE closes it",
        get(c::show).delete(c::close),
    )
    .add(
        "/api/connections/{name}/channels",
        &["GET"],
        "Channels of a connection",
        get(c::connection_channels),
    )
    .add("/api/channels", &["GET"], "Every channel", get(c::channels))
    .add(
        "/api/vhosts/{vhost}/channels",
        &["GET"],
        "Channels of a vhost",
        get(c::vhost_channels),
    )
    .add(
        "/api/channels/{name}",
        &["GET"],
        "One channel",
        get(c::channel),
    )
    .add(
        "/api/consumers",
        &["GET"],
        "Every consumer",
        get(c::consumers),
    )
    .add(
        "/api/consumers/{vhost}",
        &["GET"],
        "Consumers of a vhost",
        get(c::vhost_consumers),
    )
    .add("/api/exchanges", &["GET"], "Every exchange", get(e::list))
    .add(
        "/api/exchanges/{vhost}",
        &["GET"],
        "Exchanges of a vhost",
        get(e::list_vhost),
    )
    .add(
        "/api/exchanges/{vhost}/{name}",
        &["GET", "PUT", "DELETE"],
        "One exchange: show, declare, delete",
        get(e::show).put(e::declare).delete(e::remove),
    )
    .add(
        "/api/exchanges/{vhost}/{name}/bindings/source",
        &["GET"],
        "Bindings from an exchange",
        get(e::bindings_source),
    )
    .add(
        "/api/exchanges/{vhost}/{name}/bindings/destination",
        &["GET"],
        "Bindings to an exchange",
        get(e::bindings_destination),
    )
    .add(
        "/api/exchanges/{vhost}/{name}/publish",
        &["POST"],
        "Publishes a message",
        post(e::publish),
    )
    .add("/api/queues", &["GET"], "Every queue", get(q::list))
    .add(
        "/api/queues/{vhost}",
        &["GET"],
        "Queues of a vhost",
        get(q::list_vhost),
    )
    .add(
        "/api/queues/{vhost}/{name}",
        &["GET", "PUT", "DELETE"],
        "One queue: show, declare, delete",
        get(q::show).put(q::declare).delete(q::remove),
    )
    .add(
        "/api/queues/{vhost}/{name}/bindings",
        &["GET"],
        "Bindings to a queue",
        get(q::bindings),
    )
    .add(
        "/api/queues/{vhost}/{name}/contents",
        &["DELETE"],
        "Purges a queue",
        delete(q::purge),
    )
    .add(
        "/api/queues/{vhost}/{name}/get",
        &["POST"],
        "Gets messages (ack or requeue)",
        post(q::get_messages),
    )
    .add(
        "/api/queues/{vhost}/{name}/actions",
        &["POST"],
        "Queue actions (sync, cancel_sync: no-ops)",
        post(q::actions),
    )
    .add("/api/bindings", &["GET"], "Every binding", get(b::list))
    .add(
        "/api/bindings/{vhost}",
        &["GET"],
        "Bindings of a vhost",
        get(b::list_vhost),
    )
    .add(
        "/api/bindings/{vhost}/e/{source}/q/{dest}",
        &["GET", "POST"],
        "Bindings between an exchange and a queue; POST binds",
        get(b::between_queue).post(b::bind_queue),
    )
    .add(
        "/api/bindings/{vhost}/e/{source}/e/{dest}",
        &["GET", "POST"],
        "Bindings between two exchanges; POST binds",
        get(b::between_exchange).post(b::bind_exchange),
    )
    .add(
        "/api/bindings/{vhost}/e/{source}/q/{dest}/{props}",
        &["GET", "DELETE"],
        "One exchange-to-queue binding",
        get(b::show_queue).delete(b::unbind_queue),
    )
    .add(
        "/api/bindings/{vhost}/e/{source}/e/{dest}/{props}",
        &["GET", "DELETE"],
        "One exchange-to-exchange binding",
        get(b::show_exchange).delete(b::unbind_exchange),
    )
    .add("/api/vhosts", &["GET"], "Virtual hosts", get(v::list))
    .add(
        "/api/vhosts/{vhost}",
        &["GET", "PUT", "DELETE"],
        "One vhost: show, create, delete",
        get(v::show).put(v::create).delete(v::remove),
    )
    .add(
        "/api/vhosts/{vhost}/permissions",
        &["GET"],
        "Permissions in a vhost",
        get(v::permissions),
    )
    .add(
        "/api/vhost-limits",
        &["GET"],
        "Limits of every vhost (max-connections, max-queues)",
        get(limits::vhost_list),
    )
    .add(
        "/api/vhost-limits/{vhost}",
        &["GET"],
        "Limits of one vhost",
        get(limits::vhost_show),
    )
    .add(
        "/api/vhost-limits/{vhost}/{name}",
        &["PUT", "DELETE"],
        "Set or clear one vhost limit",
        put(limits::vhost_set).delete(limits::vhost_clear),
    )
    .add(
        "/api/user-limits",
        &["GET"],
        "Limits of every user (max-connections, max-channels)",
        get(limits::user_list),
    )
    .add(
        "/api/user-limits/{user}",
        &["GET"],
        "Limits of one user",
        get(limits::user_show),
    )
    .add(
        "/api/user-limits/{user}/{name}",
        &["PUT", "DELETE"],
        "Set or clear one user limit",
        put(limits::user_set).delete(limits::user_clear),
    )
    .add("/api/users", &["GET"], "Users", get(u::list))
    .add(
        "/api/users/without-permissions",
        &["GET"],
        "Users without any permission",
        get(u::without_permissions),
    )
    .add(
        "/api/users/bulk-delete",
        &["POST"],
        "Deletes several users",
        post(u::bulk_delete),
    )
    .add(
        "/api/users/{user}",
        &["GET", "PUT", "DELETE"],
        "One user: show, create or update, delete",
        get(u::show).put(u::put_user).delete(u::remove),
    )
    .add(
        "/api/users/{user}/permissions",
        &["GET"],
        "Permissions of a user",
        get(u::user_permissions),
    )
    .add(
        "/api/permissions",
        &["GET"],
        "Every permission",
        get(u::permissions),
    )
    .add(
        "/api/permissions/{vhost}/{user}",
        &["GET", "PUT", "DELETE"],
        "One permission: show, set, clear",
        get(u::permission)
            .put(u::set_permission)
            .delete(u::clear_permission),
    )
    .add(
        "/api/topic-permissions",
        &["GET"],
        "Topic permissions (none: FerryMQ does not restrict topics)",
        get(u::topic_permissions),
    )
    .add(
        "/api/parameters",
        &["GET"],
        "Every runtime parameter",
        get(pa::list),
    )
    .add(
        "/api/parameters/{component}",
        &["GET"],
        "Parameters of a component",
        get(pa::list_component),
    )
    .add(
        "/api/parameters/{component}/{vhost}",
        &["GET"],
        "Parameters of a component in a vhost",
        get(pa::list_component_vhost),
    )
    .add(
        "/api/parameters/{component}/{vhost}/{name}",
        &["GET", "PUT", "DELETE"],
        "One parameter: show, set, delete",
        get(pa::show).put(pa::set).delete(pa::remove),
    )
    .add(
        "/api/global-parameters",
        &["GET"],
        "Global parameters",
        get(pa::globals),
    )
    .add(
        "/api/global-parameters/{name}",
        &["GET", "PUT", "DELETE"],
        "One global parameter",
        get(pa::global)
            .put(pa::set_global)
            .delete(pa::remove_global),
    )
    .add("/api/policies", &["GET"], "Every policy", get(po::list))
    .add(
        "/api/policies/{vhost}",
        &["GET"],
        "Policies of a vhost",
        get(po::list_vhost),
    )
    .add(
        "/api/policies/{vhost}/{name}",
        &["GET", "PUT", "DELETE"],
        "One policy: show, set, delete",
        get(po::show).put(po::set).delete(po::remove),
    )
    .add(
        "/api/operator-policies",
        &["GET"],
        "Every operator policy",
        get(po::op_list),
    )
    .add(
        "/api/operator-policies/{vhost}",
        &["GET"],
        "Operator policies of a vhost",
        get(po::op_list_vhost),
    )
    .add(
        "/api/operator-policies/{vhost}/{name}",
        &["GET", "PUT", "DELETE"],
        "One operator policy",
        get(po::op_show).put(po::op_set).delete(po::op_remove),
    )
    .add(
        "/api/definitions",
        &["GET", "POST"],
        "Exports (GET) or imports (POST) every definition",
        get(definitions::export).post(definitions::import),
    )
    .add(
        "/api/definitions/{vhost}",
        &["GET", "POST"],
        "Exports or imports the definitions of a vhost",
        get(definitions::export_vhost).post(definitions::import_vhost),
    )
    .add(
        "/api/aliveness-test/{vhost}",
        &["GET"],
        "Declares, publishes to and reads a test queue",
        get(health::aliveness),
    )
    .add(
        "/api/health/checks/alarms",
        &["GET"],
        "Fails while a resource alarm is in effect",
        get(health::alarms),
    )
    .add(
        "/api/health/checks/local-alarms",
        &["GET"],
        "Same as alarms (one node)",
        get(health::alarms),
    )
    .add(
        "/api/health/checks/virtual-hosts",
        &["GET"],
        "Every vhost is running",
        get(health::virtual_hosts),
    )
    .add(
        "/api/health/checks/port-listener/{port}",
        &["GET"],
        "A listener is bound on the port",
        get(health::port_listener),
    )
    .add(
        "/api/health/checks/protocol-listener/{protocol}",
        &["GET"],
        "A listener serves the protocol",
        get(health::protocol_listener),
    )
    .add(
        "/api/health/checks/node-is-quorum-critical",
        &["GET"],
        "Always ok (no quorum queues)",
        get(health::ok),
    )
    .add(
        "/api/health/checks/node-is-mirror-sync-critical",
        &["GET"],
        "Always ok (no mirrors)",
        get(health::ok),
    )
    .add(
        "/api/health/checks/certificate-expiration/{within}/{unit}",
        &["GET"],
        "Certificates expiring soon (none configured)",
        get(health::ok),
    )
    .add(
        "/api/federation-links",
        &["GET"],
        "Federation links and their state",
        get(federation::links_all),
    )
    .add(
        "/api/federation-links/{vhost}",
        &["GET"],
        "Federation links of a vhost",
        get(federation::links_vhost),
    )
    .add(
        "/api/federation-links/vhost/{vhost}/{id}/restart",
        &["DELETE"],
        "Restarts a federation link",
        delete(federation::restart),
    )
    .add(
        "/api/openapi.json",
        &["GET"],
        "This API's OpenAPI description",
        get(crate::openapi::serve),
    )
    .add(
        "/metrics",
        &["GET"],
        "Prometheus metrics",
        get(crate::metrics::serve),
    )
}

/// Reads `Option<serde_json::Value>` fields as strings for error texts.
pub fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}
