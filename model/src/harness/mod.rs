//! What the replication and cluster models share: both run core's replicas beside a controller
//! and a producing client, as Stateright actors over a network that behaves as Kafka sees TCP,
//! and both check replication's properties on every partition. Each model says only what is
//! its own (its actors, which actions it offers, its own properties, how its states read), so
//! that a fix to the network, the client or a shared property reaches both at once.
//!
//! - [`system`]: the network and the checker's view of the actors ([`TcpModel`]), generic over
//!   a model's [`System`].
//! - [`client`]: the producing client.
//! - [`fetch_expiry`]: a leader's held follower fetches, which the server expires.
//! - [`properties`]: replication's properties over every partition of a model's state.
//! - [`trace`]: counterexamples in words.

pub mod client;
pub mod fetch_expiry;
pub mod properties;
pub mod system;
pub mod trace;

use stateright::actor::{ActorModelState, Id};
use surety_core::replication::Node;

pub use client::{ClientState, Outgoing, record_batch, record_index, record_of};
pub use properties::Observe;
pub use system::{Action, Budget, Disconnected, State, System, TcpModel};

/// What one actor of a model holds. The client is the same in every model; brokers and the
/// controller are each model's own.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ModelState<B, C> {
    /// A broker.
    Broker(B),
    /// The controller.
    Controller(C),
    /// The client.
    Client(ClientState),
}

/// Where the actors sit: brokers `0..n`, then the controller, then the client. Core's actors
/// name their peers as [`Node`]s; Stateright's by position.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// Number of brokers.
    pub brokers: usize,
}

impl Layout {
    /// Where the actors of `state` sit: every actor but the last two is a broker.
    pub fn of<A: stateright::actor::Actor, H>(state: &ActorModelState<A, H>) -> Layout {
        Layout {
            brokers: state.actor_states.len() - 2,
        }
    }

    /// The controller's id.
    pub fn controller(self) -> Id {
        Id::from(self.brokers)
    }

    /// The client's id.
    pub fn client(self) -> Id {
        Id::from(self.brokers + 1)
    }

    /// A core node's id.
    pub fn id(self, node: Node) -> Id {
        match node {
            Node::Broker(b) => Id::from(b as usize),
            Node::Controller => self.controller(),
            Node::Client(_) => self.client(),
        }
    }

    /// The core node an id names.
    pub fn node(self, id: Id) -> Node {
        let index = usize::from(id);
        if index < self.brokers {
            Node::Broker(index as u32)
        } else if index == self.brokers {
            Node::Controller
        } else {
            Node::Client(index as u64)
        }
    }

    /// The actor an id names, for traces.
    pub fn name(self, id: Id) -> String {
        match self.node(id) {
            Node::Broker(b) => format!("broker {b}"),
            Node::Controller => "controller".to_string(),
            Node::Client(_) => "client".to_string(),
        }
    }
}
