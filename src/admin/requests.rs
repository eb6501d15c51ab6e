//! `GET /api/v1/requests/{id}`: the story of one request ([`crate::diagnose::why`]),
//! told from the gateway's files and its live incidents.

use super::routes::{error, json_response, Body};
use super::AdminState;
use crate::diagnose::why::{self, NotFound, Sources};
use http::{Response, StatusCode};

/// The story as JSON; 404 when no access line has the id, 400 for a malformed id.
pub(super) async fn story(state: &AdminState, id: String) -> Response<Body> {
    let data_dir = state.info.data_dir.clone();
    let config_path = state.info.config_path.clone();
    let started_with = state.info.config.clone();
    let incidents = state.events.monitor().incidents.list();
    // Reading the logs blocks: off the admin API's tasks.
    let told = tokio::task::spawn_blocking(move || {
        let config = config_path
            .and_then(|p| crate::config::load(&p).ok())
            .map(|c| std::sync::Arc::new(c.config))
            .or(started_with);
        let sources = Sources {
            data_dir: &data_dir,
            config: config.as_deref(),
            incidents: Some(incidents),
        };
        why::explain(&sources, &id)
    })
    .await;
    match told {
        Ok(Ok(story)) => json_response(
            StatusCode::OK,
            &serde_json::to_value(story).unwrap_or_default(),
        ),
        Ok(Err(e @ NotFound::Unknown { .. })) => error(StatusCode::NOT_FOUND, &e.to_string()),
        Ok(Err(e @ NotFound::Invalid(_))) => error(StatusCode::BAD_REQUEST, &e.to_string()),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("telling the story failed: {e}"),
        ),
    }
}
