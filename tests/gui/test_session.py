"""Sections talk through the session's events, not through each other."""

from __future__ import annotations

import pytest

from napari_medseg.widgets.session import EVENTS, Session


def test_listeners_hear_their_event_in_order_and_unknown_events_are_refused():
    session = Session(viewer=None)
    heard = []
    session.connect("version_saved", lambda path: heard.append(("first", path)))
    session.connect("version_saved", lambda path: heard.append(("second", path)))
    session.on_model_changed(lambda model: heard.append(("model", model)))
    session.emit("version_saved", "v2")
    session.set_model("m")
    assert heard == [("first", "v2"), ("second", "v2"), ("model", "m")] and session.model == "m"
    with pytest.raises(ValueError, match="unknown session event 'saved'"):
        session.connect("saved", print)
    with pytest.raises(ValueError, match="unknown session event"):
        session.emit("resegment")
    assert "segment_requested" in EVENTS


def test_the_sections_are_wired_through_the_session(make_napari_viewer, home):
    """A saved version becomes the active model, a re-segment request reaches the Segment
    section, a save request writes the corrections: each through the session."""
    from napari_medseg.widgets import MedSegPanel

    panel = MedSegPanel(make_napari_viewer())
    listeners = panel.session._listeners
    assert panel.model_section.select_path in listeners["version_saved"]
    assert panel.segment_section.run in listeners["segment_requested"]
    assert panel.correct_section.autosave_now in listeners["save_corrections"]
