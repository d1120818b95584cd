//! HTTP basic authentication against the broker's users, and RabbitMQ's
//! management tags: `management` (own vhosts), `policymaker` (+ policies and
//! parameters), `monitoring` (+ every vhost, connection and node, read-only),
//! `administrator` (everything).

use crate::error::ApiError;
use crate::HttpState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine;
use ferrymq_broker::auth::{Access, User};
use std::sync::Arc;

/// The authenticated user of a request.
pub struct Caller {
    /// The user.
    pub user: User,
}

impl Caller {
    fn has(&self, tag: &str) -> bool {
        self.user.tags.iter().any(|t| t == tag)
    }

    /// Tag `administrator`.
    pub fn is_admin(&self) -> bool {
        self.has("administrator")
    }

    /// Sees every vhost and connection (`monitoring` or `administrator`).
    pub fn sees_all(&self) -> bool {
        self.is_admin() || self.has("monitoring")
    }

    /// May change policies and parameters (`policymaker` or `administrator`).
    pub fn is_policymaker(&self) -> bool {
        self.is_admin() || self.has("policymaker")
    }

    /// 403 unless administrator.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden("Not administrator user"))
        }
    }

    /// 403 unless monitoring or administrator.
    pub fn require_monitor(&self) -> Result<(), ApiError> {
        if self.sees_all() {
            Ok(())
        } else {
            Err(ApiError::forbidden("Not monitor user"))
        }
    }

    /// 403 unless policymaker with access to the vhost.
    pub fn require_policymaker(&self, state: &HttpState, vhost: &str) -> Result<(), ApiError> {
        if !self.is_policymaker() {
            return Err(ApiError::forbidden("Not policymaker user"));
        }
        self.require_vhost(state, vhost)
    }

    /// Whether the user may see objects of `vhost` in listings.
    pub fn sees_vhost(&self, state: &HttpState, vhost: &str) -> bool {
        self.sees_all() || state.broker.permission(vhost, &self.user.name).is_some()
    }

    /// 403 unless the user has some permission in `vhost` (administrators too,
    /// as in RabbitMQ: acting inside a vhost needs access to it).
    pub fn require_vhost(&self, state: &HttpState, vhost: &str) -> Result<(), ApiError> {
        if state.broker.permission(vhost, &self.user.name).is_some() {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "access to vhost '{vhost}' refused for user '{}'",
                self.user.name
            )))
        }
    }

    /// Checks a resource permission (configure/write/read) like an AMQP client.
    pub fn require(
        &self,
        state: &HttpState,
        vhost: &str,
        access: Access,
        kind: &str,
        name: &str,
    ) -> Result<(), ApiError> {
        self.require_vhost(state, vhost)?;
        state
            .broker
            .check_access(&self.user.name, vhost, access, kind, name)
            .map_err(|e| ApiError::forbidden(e.text))
    }
}

/// Decodes `Authorization: Basic base64(user:password)`.
fn basic_credentials(parts: &Parts) -> Option<(String, String)> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

impl FromRequestParts<Arc<HttpState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<HttpState>,
    ) -> Result<Self, Self::Rejection> {
        let Some((name, password)) = basic_credentials(parts) else {
            return Err(ApiError::unauthorized("Login failed"));
        };
        let Some(user) = state.broker.authenticate(&name, &password) else {
            // Only this request waits; other requests are served meanwhile.
            tokio::time::sleep(state.auth_failure_delay).await;
            return Err(ApiError::unauthorized("Login failed"));
        };
        let peer_is_loopback = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .is_none_or(|c| c.0.ip().is_loopback());
        if !peer_is_loopback && state.loopback_users.iter().any(|u| u == &user.name) {
            return Err(ApiError::unauthorized("User can only log in via localhost"));
        }
        let caller = Caller { user };
        let management = ["administrator", "monitoring", "policymaker", "management"];
        if !management.iter().any(|t| caller.has(t)) {
            return Err(ApiError::unauthorized("Not management user"));
        }
        Ok(caller)
    }
}
