//! Activation codes (SMC calls them access tokens): `../shared/ref/smc-api.md` §2.3.

use ferry_api::{ApiError, wrap_list};
use ferry_db::now;
use serde_json::{Value, json};

use super::check_name;
use crate::app::{OrInternal, activation};
use crate::rpc::{ActionResult, Call, time_str};

pub(super) async fn create_access_token(c: &Call<'_>) -> ActionResult {
    let p = c.params;
    let name = p.get("Name").unwrap_or("");
    if !name.is_empty() {
        check_name("Name", name)?;
    }
    let count = p.get_int_in("Count", 1, 1000)?.unwrap_or(100);
    let ttl = p.get_int_in("TimeToLiveInDays", 1, 90)?.unwrap_or(30);
    let name = if name.is_empty() {
        "activation-code"
    } else {
        name
    };
    let new =
        activation::create(c.st, name, p.get("Description").unwrap_or(""), count, ttl).await?;
    Ok(json!({ "AccessTokenId": new.id.to_string(), "AccessTokenCode": new.code }))
}

pub(super) async fn list_access_tokens(c: &Call<'_>) -> ActionResult {
    let ids = c.params.get_list("AccessTokenId");
    let name = c.params.get("Name");
    let status = c.params.get("Status");
    let at = now();
    let items: Vec<Value> =
        c.st.db
            .activation_code_list()
            .await
            .or_internal()?
            .into_iter()
            .filter(|t| ids.is_empty() || ids.contains(&t.id))
            .filter(|t| name.is_none_or(|n| n == t.name))
            .filter(|t| status.is_none_or(|s| s == activation::status(t, at)))
            .map(|t| {
                json!({
                    "AccessTokenId": t.id,
                    "Name": t.name,
                    "Description": t.description,
                    "Count": t.max_count.to_string(),
                    "RegisteredCount": t.registered_count.to_string(),
                    "TimeToLiveInDays": t.ttl_days.to_string(),
                    "CreationTime": time_str(t.created_at),
                    "Status": activation::status(&t, at),
                })
            })
            .collect();
    // SMC swaps PageNumber and PageSize in this action's response (smc-api.md §2.3); so do we.
    Ok(json!({
        "TotalCount": items.len(),
        "PageNumber": items.len().max(1),
        "PageSize": 1,
        "AccessTokens": wrap_list("AccessToken", items),
    }))
}

fn token_not_found(id: &str) -> ApiError {
    ApiError::new(
        "InvalidAccessTokenId.NotFound",
        404,
        format!("activation code {id} does not exist: list them with `ferry activation-code list`"),
    )
}

pub(super) async fn disable_access_token(c: &Call<'_>) -> ActionResult {
    let id = c.params.required("AccessTokenId")?;
    if !c.st.db.activation_code_disable(id).await.or_internal()? {
        return Err(token_not_found(id));
    }
    Ok(json!({}))
}

pub(super) async fn delete_access_token(c: &Call<'_>) -> ActionResult {
    let id = c.params.required("AccessTokenId")?;
    if !c.st.db.activation_code_delete(id).await.or_internal()? {
        return Err(token_not_found(id));
    }
    Ok(json!({}))
}
