"""Where a fleet's state lives under its `--etcd-prefix`: one place that spells every key.

    <prefix>/mapping                 the mapping document, byte for byte the YAML (the contract)
    <prefix>/audit/head              the trail's head: sequence, hash, and what it accounts for (JSON)
    <prefix>/audit/policy            the canonical JSON of the policy the trail last published
    <prefix>/audit/events/<seq>      one audit event (JSON), <seq> zero-padded to 20 digits
    <prefix>/members/<member id>     one live sidecar (JSON, on its lease)

Everything but `mapping` is the implementation's and read through the RPCs and verbs.
Pure: must never talk to etcd.
"""

from __future__ import annotations

from dataclasses import dataclass

from consent_sidecar.etcd.client import prefix_end

__all__ = ["Keys"]

_SEQ_DIGITS = 20  # 2**64 has 20 digits: keys sort in sequence order


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str

    @property
    def mapping(self) -> bytes:
        return f"{self.prefix}/mapping".encode()

    @property
    def head(self) -> bytes:
        return f"{self.prefix}/audit/head".encode()

    @property
    def policy(self) -> bytes:
        return f"{self.prefix}/audit/policy".encode()

    @property
    def events(self) -> bytes:
        return f"{self.prefix}/audit/events/".encode()

    @property
    def events_end(self) -> bytes:
        return prefix_end(self.events)

    def event(self, sequence: int) -> bytes:
        return self.events + str(sequence).zfill(_SEQ_DIGITS).encode()

    @property
    def members(self) -> bytes:
        return f"{self.prefix}/members/".encode()

    @property
    def members_end(self) -> bytes:
        return prefix_end(self.members)

    def member(self, member_id: str) -> bytes:
        return self.members + member_id.encode()
