"""A tiny GTK3 window that offers one file for drag and drop, so the GUI
test can do a real X drag (moved with xdotool) onto the app's window.

usage: python3 drag_source.py FILE X Y
"""
import sys
from pathlib import Path

import gi

gi.require_version("Gdk", "3.0")
gi.require_version("Gtk", "3.0")
from gi.repository import Gdk, Gtk  # noqa: E402

uri = Path(sys.argv[1]).resolve().as_uri()
x, y = int(sys.argv[2]), int(sys.argv[3])

window = Gtk.Window(title="drag-source")
window.set_default_size(200, 120)
window.move(x, y)
button = Gtk.Button(label="drag me")
button.drag_source_set(Gdk.ModifierType.BUTTON1_MASK, [], Gdk.DragAction.COPY)
button.drag_source_add_uri_targets()
button.connect("drag-data-get", lambda _w, _ctx, data, _info, _time: data.set_uris([uri]))
window.add(button)
window.connect("destroy", Gtk.main_quit)
window.show_all()
print("ready", flush=True)
Gtk.main()
