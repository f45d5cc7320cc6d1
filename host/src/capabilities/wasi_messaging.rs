//! The standard `wasi:messaging@0.2.0-draft` imports (`types`, `producer`)
//! over the same log as `wasmhost:plugin/messaging`: a standard component
//! publishes through the same grants, limits and outbox, so its messages,
//! too, are stored only with the outcome of what it was handling.
//!
//! - `client.connect("")` or `connect("default")` is the host's broker; any
//!   other name is `error::connection`.
//! - A message's metadata are its headers; its content type is the
//!   `content-type` header.
//!
//! Invariant: a resource handle of the guest names only resources of its
//! own store's table; a handle it has not got is a trap, never a panic.

use super::messaging::Refused;
use super::HostState;
use crate::bindings::wasi_messaging::wasi::messaging::{producer, types};
use crate::bindings::wasi_messaging::{Client, Message};
use types::Error;
use wasmtime::component::Resource;

impl types::Host for HostState {}

impl types::HostClient for HostState {
    fn connect(&mut self, name: String) -> wasmtime::Result<Result<Resource<Client>, Error>> {
        if !name.is_empty() && name != "default" {
            return Ok(Err(Error::Connection(format!(
                "no messaging backend named `{name}`: this host has one, `default`"
            ))));
        }
        Ok(Ok(self.table.push(Client)?))
    }

    fn disconnect(&mut self, _client: Resource<Client>) -> wasmtime::Result<Result<(), Error>> {
        Ok(Ok(()))
    }

    fn drop(&mut self, client: Resource<Client>) -> wasmtime::Result<()> {
        self.table.delete(client)?;
        Ok(())
    }
}

impl types::HostMessage for HostState {
    fn new(&mut self, data: Vec<u8>) -> wasmtime::Result<Resource<Message>> {
        Ok(self.table.push(Message {
            data,
            ..Message::default()
        })?)
    }

    fn topic(&mut self, msg: Resource<Message>) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&msg)?.topic.clone())
    }

    fn content_type(&mut self, msg: Resource<Message>) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&msg)?.content_type.clone())
    }

    fn set_content_type(
        &mut self,
        msg: Resource<Message>,
        content_type: String,
    ) -> wasmtime::Result<()> {
        self.table.get_mut(&msg)?.content_type = Some(content_type);
        Ok(())
    }

    fn data(&mut self, msg: Resource<Message>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.table.get(&msg)?.data.clone())
    }

    fn set_data(&mut self, msg: Resource<Message>, data: Vec<u8>) -> wasmtime::Result<()> {
        self.table.get_mut(&msg)?.data = data;
        Ok(())
    }

    fn metadata(&mut self, msg: Resource<Message>) -> wasmtime::Result<Option<types::Metadata>> {
        let metadata = &self.table.get(&msg)?.metadata;
        Ok((!metadata.is_empty()).then(|| metadata.clone()))
    }

    fn add_metadata(
        &mut self,
        msg: Resource<Message>,
        key: String,
        value: String,
    ) -> wasmtime::Result<()> {
        let metadata = &mut self.table.get_mut(&msg)?.metadata;
        match metadata.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => metadata.push((key, value)),
        }
        Ok(())
    }

    fn set_metadata(
        &mut self,
        msg: Resource<Message>,
        meta: types::Metadata,
    ) -> wasmtime::Result<()> {
        self.table.get_mut(&msg)?.metadata = meta;
        Ok(())
    }

    fn remove_metadata(&mut self, msg: Resource<Message>, key: String) -> wasmtime::Result<()> {
        self.table
            .get_mut(&msg)?
            .metadata
            .retain(|(k, _)| *k != key);
        Ok(())
    }

    fn drop(&mut self, msg: Resource<Message>) -> wasmtime::Result<()> {
        self.table.delete(msg)?;
        Ok(())
    }
}

impl producer::Host for HostState {
    fn send(
        &mut self,
        _client: Resource<Client>,
        topic: String,
        message: Resource<Message>,
    ) -> wasmtime::Result<Result<(), Error>> {
        let message = self.table.delete(message)?;
        let mut headers = message.metadata;
        if let Some(content_type) = message.content_type {
            headers.retain(|(k, _)| !k.eq_ignore_ascii_case("content-type"));
            headers.push(("content-type".into(), content_type));
        }
        let staged = self.stage_publish(topic, headers, message.data, None, None);
        Ok(staged.map(drop).map_err(|refused| match refused {
            Refused::Denied(m) => Error::PermissionDenied(m),
            Refused::TooLarge(n) => Error::Other(format!("the message is larger than {n} bytes")),
            Refused::Unavailable(m) => Error::Other(m),
        }))
    }
}

/// The message a standard handler receives for a delivery: its headers as
/// metadata (the content type apart), plus `wasmhost-message-id`,
/// `wasmhost-attempt` and `wasmhost-published-at` so it can deduplicate.
pub fn incoming(msg: &crate::bindings::v2::wasmhost::plugin::messaging::Message) -> Message {
    let mut metadata: Vec<(String, String)> = msg
        .headers
        .iter()
        .filter(|(k, _)| k != "content-type")
        .cloned()
        .collect();
    metadata.push(("wasmhost-message-id".into(), msg.id.clone()));
    metadata.push(("wasmhost-attempt".into(), msg.attempt.to_string()));
    metadata.push((
        "wasmhost-published-at".into(),
        msg.published_at_ms.to_string(),
    ));
    Message {
        data: msg.body.clone(),
        content_type: msg
            .headers
            .iter()
            .find(|(k, _)| k == "content-type")
            .map(|(_, v)| v.clone()),
        metadata,
        topic: Some(msg.topic.clone()),
    }
}

impl HostState {
    /// Puts a delivery's message in the store's table for the handler.
    pub(crate) fn push_message(&mut self, msg: Message) -> wasmtime::Result<Resource<Message>> {
        Ok(self.table.push(msg)?)
    }
}
