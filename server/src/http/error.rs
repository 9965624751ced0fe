//! How service errors become HTTP responses: the status from `AppError::status`, and the
//! contract's `{"error", "code"}` body.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use common::AppError;
use protocol::api::ApiError;
use serde::de::DeserializeOwned;

pub struct HttpError(pub AppError);

impl From<AppError> for HttpError {
    fn from(e: AppError) -> Self {
        HttpError(e)
    }
}

pub fn error_response(err: &AppError) -> Response {
    let status = StatusCode::from_u16(err.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = ApiError {
        error: err.to_string(),
        code: err.code().to_owned(),
    };
    let mut resp = (status, Json(body)).into_response();
    if let AppError::RateLimited { retry_after_s } | AppError::Unavailable { retry_after_s } = err {
        if let Ok(v) = HeaderValue::from_str(&retry_after_s.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    resp
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        error_response(&self.0)
    }
}

pub type HttpResult<T> = Result<T, HttpError>;

/// `Json<T>` whose rejections use the contract's error body: 422 for a body that does not
/// fit the type, 400 for broken JSON, 415 without a JSON content type.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(JsonBody(v)),
            Err(rejection) => {
                let (status, code) = match &rejection {
                    JsonRejection::JsonDataError(_) => {
                        (StatusCode::UNPROCESSABLE_ENTITY, "invalid")
                    }
                    JsonRejection::MissingJsonContentType(_) => {
                        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
                    }
                    _ => (StatusCode::BAD_REQUEST, "malformed"),
                };
                let body = ApiError {
                    error: rejection.body_text(),
                    code: code.to_owned(),
                };
                Err((status, Json(body)).into_response())
            }
        }
    }
}
