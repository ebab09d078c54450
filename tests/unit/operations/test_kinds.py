"""The one table of actor kinds that launch, stop, drain and upgrade loop over."""

from __future__ import annotations

import inspect

from messaging.core.types import Channel
from messaging.operations.kinds import BY_NAME, DRAIN_ORDER, KIND_NAMES, KINDS
from messaging.operations.lifecycle import busy


def test_one_courier_kind_takes_intake_early_and_sends_every_channel():
    assert KIND_NAMES == ("courier",)
    assert tuple(kind.name for kind in DRAIN_ORDER) == ("courier",)
    assert [kind.name for kind in KINDS if kind.early] == ["courier"]
    assert [kind.name for kind in KINDS if kind.listens] == ["courier"]
    assert BY_NAME["courier"].channels == (Channel.SATELLITE, Channel.MAILOUT, Channel.SMS)


def test_every_kind_is_a_ray_actor_class_with_what_launch_and_lifecycle_call():
    for kind in KINDS:
        actor = kind.actor_class()
        assert hasattr(actor, "options") and hasattr(actor, "remote"), kind.name  # a Ray actor class
        methods = {"drain", "stats", "start" if kind.listens or kind.sweeps else "ping"}
        methods |= {"stop"} if kind.listens else set()
        for method in methods:
            assert hasattr(actor, method), f"{kind.name} lacks {method}"


class _Member:
    """Records the Ray calls the launcher makes on a member handle."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, method):
        member = self

        class _Method:
            @staticmethod
            def remote(*args, **kwargs):
                member.calls.append((method, args, kwargs))
                return f"ref:{method}"

        return _Method


def test_up_means_the_listener_listens_the_sweep_runs_or_the_actor_answers():
    from messaging.runtime.config import Config

    config = Config(outbox_sweep_interval=7.5)
    seen = {}
    for kind in KINDS:
        member = _Member()
        kind.start(member, config)
        seen[kind.name] = member.calls
    assert seen["courier"] == [("start", (7.5,), {})], "its start waits for the socket and starts the sweep"


def test_constructor_arguments_match_each_actor_class():
    from messaging.runtime.config import Config
    from messaging.runtime.pool import NamedPool

    config = Config()
    pools = {name: NamedPool(name, 2, "ns") for name in KIND_NAMES}
    for kind in KINDS:
        init = kind.actor_class().__ray_metadata__.modified_class.__init__
        inspect.signature(init).bind(None, *kind.arguments(config, pools, 1))  # raises if they do not fit
    desk_senders = BY_NAME["courier"].arguments(config, pools, 0)[1]
    assert {channel: pool.kind for channel, pool in desk_senders.items()} == {
        Channel.SATELLITE: "courier",
        Channel.MAILOUT: "courier",
        Channel.SMS: "courier",
    }, "the user desks kick the courier pool for every channel"


def test_busy_counts_what_each_kind_still_has_in_hand():
    assert busy("courier", {"in_flight": 1, "sessions": 3, "accepted": 9, "draining": True}) == 4
    assert busy("courier", {"in_flight": 0, "sessions": 0, "polling": True, "delivered": 5}) == 1
    assert busy("courier", {"in_flight": 0, "sessions": 0, "polling": False}) == 0
    assert busy("courier", {"in_flight": 0, "delivered": 3, "mailout_delivered": 3, "draining": True}) == 0
    assert busy("courier", {"in_flight": 2, "sms_delivered": 9}) == 2
    assert busy("courier", {}) == 0


def test_an_earlier_versions_user_actors_senders_and_mail_servers_are_retired_kinds_whose_work_is_waited_for():
    from messaging.operations.kinds import RETIRED_KIND_NAMES, RETIRED_LISTENING

    assert RETIRED_KIND_NAMES == ("user", "satellite", "outbound", "mailout", "sms", "sender", "mailserver")
    assert RETIRED_LISTENING == {"mailserver"}, "an old mail server closes its socket before it goes"
    assert busy("mailserver", {"in_flight": 1, "sessions": 3, "accepted": 9, "draining": True}) == 4
    assert busy("sender", {"in_flight": 0, "polling": True, "delivered": 5}) == 1
    assert busy("user", {"in_flight": 2, "handled": 40}) == 2, "an old user actor's stores are waited for"
    assert not set(RETIRED_KIND_NAMES) & set(KIND_NAMES)
    assert busy("mailout", {"in_flight": 2, "delivered": 7, "draining": True}) == 2
    assert busy("sms", {"in_flight": 0, "delivered": 7}) == 0
    assert busy("satellite", {"in_flight": 0, "polling": True}) == 1, "an old satellite actor's poll is waited for"
