//! Raft messages to the other meta nodes: the same tarpc service (and port) clients
//! use, with the deadline openraft gives each call. The service carries them as bytes
//! (so the protocol crate does not know openraft); they are encoded and decoded here,
//! on both sides.

use std::net::SocketAddr;

use bincode::Options;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tarpc::context::Context;

use memcache_core::{Error, Result};
use memcache_proto::{MetaRpcClient, RaftBytes, MAX_FRAME};
use memcache_raft::{NodeId, TypeConfig};

/// The encoding of Raft messages: compact integers, no message above a frame, and no
/// bytes left over.
fn codec() -> impl Options {
    bincode::DefaultOptions::new()
        .with_limit(MAX_FRAME as u64)
        .reject_trailing_bytes()
}

/// Encodes a Raft request or answer.
pub(crate) fn encode<T: Serialize>(msg: &T) -> Result<RaftBytes> {
    codec()
        .serialize(msg)
        .map(RaftBytes)
        .map_err(|e| Error::invalid(format!("a Raft message that does not encode: {e}")))
}

/// Decodes a Raft request or answer; bytes that are not one are refused (-3000).
pub(crate) fn decode<T: DeserializeOwned>(bytes: &RaftBytes) -> Result<T> {
    codec()
        .deserialize(&bytes.0)
        .map_err(|e| Error::invalid(format!("a Raft message that does not decode: {e}")))
}

/// Makes a connection per peer, lazily, and again after a failure.
#[derive(Clone, Default)]
pub struct Network {
    /// The node's TLS client half, where TLS is on.
    tls: Option<std::sync::Arc<memcache_tls::TlsClient>>,
}

impl Network {
    pub fn new(tls: Option<std::sync::Arc<memcache_tls::TlsClient>>) -> Network {
        Network { tls }
    }
}

pub struct Peer {
    target: NodeId,
    addr: String,
    client: Option<MetaRpcClient>,
    tls: Option<std::sync::Arc<memcache_tls::TlsClient>>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Peer {
        Peer {
            target,
            addr: node.addr.clone(),
            client: None,
            tls: self.tls.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failure(String);

impl Peer {
    async fn client<E: std::error::Error>(
        &mut self,
    ) -> Result<MetaRpcClient, RPCError<NodeId, BasicNode, E>> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let addr: SocketAddr = self
            .addr
            .parse()
            .map_err(|e: std::net::AddrParseError| RPCError::Unreachable(Unreachable::new(&e)))?;
        let stream = memcache_tls::connect_with(self.tls.as_deref(), addr)
            .await
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let transport = memcache_proto::transport(stream);
        let client = MetaRpcClient::new(tarpc::client::Config::default(), transport).spawn();
        self.client = Some(client.clone());
        Ok(client)
    }

    /// Maps a failed call, and drops the connection so the next call reconnects.
    fn failed<E: std::error::Error>(
        &mut self,
        e: tarpc::client::RpcError,
    ) -> RPCError<NodeId, BasicNode, E> {
        self.client = None;
        RPCError::Network(NetworkError::new(&Failure(e.to_string())))
    }
}

fn context(option: &RPCOption) -> Context {
    let mut ctx = tarpc::context::current();
    ctx.deadline = std::time::Instant::now() + option.hard_ttl();
    ctx
}

/// A message that could not be sent or read back: as a network failure, so openraft
/// tries again later.
fn garbled<E: std::error::Error>(e: Error) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Network(NetworkError::new(&e))
}

macro_rules! call {
    ($self:ident, $option:ident, $method:ident, $req:ident) => {{
        let req = encode(&$req).map_err(garbled)?;
        let client = $self.client().await?;
        match client.$method(context(&$option), req).await {
            Ok(Ok(resp)) => match decode(&resp).map_err(garbled)? {
                Ok(resp) => Ok(resp),
                Err(e) => Err(RPCError::RemoteError(RemoteError::new($self.target, e))),
            },
            Ok(Err(e)) => Err(garbled(e)),
            Err(e) => Err($self.failed(e)),
        }
    }};
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        req: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        call!(self, option, raft_append, req)
    }

    async fn install_snapshot(
        &mut self,
        req: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        call!(self, option, raft_snapshot, req)
    }

    async fn vote(
        &mut self,
        req: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        call!(self, option, raft_vote, req)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openraft::Vote;

    use super::*;
    use crate::{MetaService, MetaServiceConfig};

    fn vote_request() -> VoteRequest<NodeId> {
        VoteRequest::new(Vote::new(7, 2), None)
    }

    #[test]
    fn messages_round_trip() {
        let req = vote_request();
        let back: VoteRequest<NodeId> = decode(&encode(&req).unwrap()).unwrap();
        assert_eq!(back, req);
        let resp: std::result::Result<VoteResponse<NodeId>, RaftError<NodeId>> =
            Ok(VoteResponse::new(Vote::new(7, 2), None, true));
        let back: std::result::Result<VoteResponse<NodeId>, RaftError<NodeId>> =
            decode(&encode(&resp).unwrap()).unwrap();
        assert_eq!(back, resp);
    }

    #[test]
    fn bad_bytes_are_refused() {
        let good = encode(&vote_request()).unwrap().0;
        let mut cases = vec![
            Vec::new(),
            vec![0xff; 32],
            // A length prefix far above the frame limit.
            vec![0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
        ];
        cases.extend((0..good.len()).map(|n| good[..n].to_vec()));
        cases.push([good.as_slice(), &[0]].concat());
        for bytes in cases {
            let got = decode::<VoteRequest<NodeId>>(&RaftBytes(bytes.clone()));
            assert_eq!(got.unwrap_err().code(), -3000, "{bytes:?}");
            let got = decode::<AppendEntriesRequest<TypeConfig>>(&RaftBytes(bytes.clone()));
            assert!(got.is_err(), "{bytes:?}");
            let got = decode::<InstallSnapshotRequest<TypeConfig>>(&RaftBytes(bytes.clone()));
            assert!(got.is_err(), "{bytes:?}");
        }
    }

    /// A meta node answers bytes that are no Raft message with -3000, and keeps serving.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_node_refuses_garbage() {
        let service = MetaService::start(MetaServiceConfig {
            discovery_url: "tcp://127.0.0.1:0".into(),
            http_url: String::new(),
            ..Default::default()
        })
        .await
        .unwrap();
        let timeout = Duration::from_secs(5);
        let rpc = memcache_proto::connect_meta(service.local_addr(), timeout)
            .await
            .unwrap();
        let ctx = || memcache_proto::context(timeout);
        let garbage = RaftBytes(vec![0xff; 64]);
        for got in [
            rpc.raft_vote(ctx(), garbage.clone()).await.unwrap(),
            rpc.raft_append(ctx(), garbage.clone()).await.unwrap(),
            rpc.raft_snapshot(ctx(), garbage).await.unwrap(),
        ] {
            assert_eq!(got.unwrap_err().code(), -3000);
        }
        // A real vote from a stale term is answered (and refused by Raft itself).
        let req = VoteRequest::<NodeId>::new(Vote::new(0, 2), None);
        let answer = rpc
            .raft_vote(ctx(), encode(&req).unwrap())
            .await
            .unwrap()
            .unwrap();
        let resp: std::result::Result<VoteResponse<NodeId>, RaftError<NodeId>> =
            decode(&answer).unwrap();
        assert!(!resp.unwrap().vote_granted);
        service.stop().await;
    }
}
