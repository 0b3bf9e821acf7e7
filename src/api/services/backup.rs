//! The backup RPC: the file's bytes, streamed; the call keeps its
//! in-flight slot until the client has them all.

use std::pin::Pin;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Status};

use super::{Api, GrpcResult};
use crate::api::pb::{self, backup_service_server::BackupService};
use crate::authz::Action;

type BackupStream = Pin<Box<dyn Stream<Item = Result<pb::BackupChunk, Status>> + Send>>;

#[tonic::async_trait]
impl BackupService for Api {
    type BackupStream = BackupStream;

    async fn backup(&self, req: Request<pb::BackupRequest>) -> GrpcResult<BackupStream> {
        self.handle_holding(req, Action::Backup, async |call, req, slot| {
            call.set_resource("backup".into());
            let permit = self.begin(&call, &req, Action::Backup, None).await?;
            let chunks = self.vault.backup(&permit).await?;
            let stream = ReceiverStream::new(chunks).map(move |c| {
                let _held = &slot;
                c.map(|data| pb::BackupChunk { data }).map_err(Status::from)
            });
            Ok(Box::pin(stream) as BackupStream)
        })
        .await
    }
}
