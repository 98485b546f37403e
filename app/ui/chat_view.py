"""The transcript: a Qt item model of messages and a list view that paints them as markdown.

The model holds plain data; the delegate turns each message into a QTextDocument once per
change and width and caches it, so streaming re-lays out only the message that grew.
"""

import html
import math
import re
from dataclasses import dataclass, field

from PySide6.QtCore import QAbstractListModel, QEvent, QModelIndex, QPointF, QRectF, QSize, Qt, Signal
from PySide6.QtGui import (
    QAbstractTextDocumentLayout, QColor, QGuiApplication, QKeySequence, QPainter, QPainterPath, QPalette, QTextCharFormat,
    QTextCursor, QTextDocument,
)
from PySide6.QtWidgets import QAbstractItemView, QListView, QMenu, QStyledItemDelegate

from app.ui import markdown

# While an answer streams its finished paragraphs stay laid out; only the text after the last
# paragraph break that ends at least this many characters back is rebuilt on each update.
LIVE_TAIL_CHARS = 1500
# A streaming row grows in steps of this many pixels, so the list is relaid out (every row asked
# for its size) once per several lines instead of once per line.
GROW_STEP_PX = 160
_COPY_LINK = re.compile(r'href="copy-code:(\d+)"')
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")

STATE_LABELS = {
    "generating": "Generating…",
    "waiting": "Waiting for the model…",
    "stopped": "Stopped",
    "interrupted": "Interrupted: the app closed before this answer finished",
    "failed": "Failed",
}


@dataclass
class Entry:
    """One message as the view sees it; `revision` changes whenever its look does."""

    id: int
    role: str
    content: str
    state: str = "complete"
    stats: dict = field(default_factory=dict)
    attachments: list = field(default_factory=list)
    progress: tuple | None = None  # (done, total) while prefilling
    revision: int = 0


def entry_from_message(m) -> Entry:
    return Entry(m.id, m.role, m.content, m.state, dict(m.stats or {}), list(getattr(m, "attachments", []) or []))


class TranscriptModel(QAbstractListModel):
    EntryRole = Qt.UserRole + 1
    # Every update(). dataChanged only when a message's state or figures change: QListView answers
    # each dataChanged by asking every row for its size, which streaming cannot afford 30 times a second.
    rowChanged = Signal(QModelIndex)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.entries: list[Entry] = []

    def rowCount(self, parent=QModelIndex()):
        return 0 if parent.isValid() else len(self.entries)

    def data(self, index, role=Qt.DisplayRole):
        if not index.isValid():
            return None
        e = self.entries[index.row()]
        if role == self.EntryRole:
            return e
        if role in (Qt.DisplayRole, Qt.AccessibleTextRole):
            return f"{'You' if e.role == 'user' else 'Assistant'}: {e.content}"
        return None

    def set_entries(self, entries: list[Entry]):
        self.beginResetModel()
        self.entries = list(entries)
        self.endResetModel()

    def append(self, entry: Entry) -> int:
        row = len(self.entries)
        self.beginInsertRows(QModelIndex(), row, row)
        self.entries.append(entry)
        self.endInsertRows()
        return row

    def row_of(self, message_id: int) -> int:
        for row in range(len(self.entries) - 1, -1, -1):
            if self.entries[row].id == message_id:
                return row
        return -1

    def update(self, message_id: int, *, append: str = "", content: str | None = None, state: str | None = None,
               stats: dict | None = None, progress=False):
        """Change one message in place; `progress=None` clears the prefill progress."""
        row = self.row_of(message_id)
        if row < 0:
            return
        e = self.entries[row]
        if content is not None:
            e.content = content
        e.content += append
        if state is not None:
            e.state = state
        if stats is not None:
            e.stats = dict(stats)
        if progress is not False:
            e.progress = progress
        e.revision += 1
        idx = self.index(row)
        if state is not None or stats is not None:
            self.dataChanged.emit(idx, idx, [self.EntryRole])
        self.rowChanged.emit(idx)

    def remove_from(self, row: int):
        if 0 <= row < len(self.entries):
            self.beginRemoveRows(QModelIndex(), row, len(self.entries) - 1)
            del self.entries[row:]
            self.endRemoveRows()


def _attachment_line(a, sent: dict | None) -> str:
    """"report.pdf · 300 pages · 152,340 tokens · whole", or which passages went in when it did not fit."""
    name = getattr(a, "file_name", str(a))
    if not sent:
        return name
    size = f"{sent['pages']:,} pages" if sent.get("kind") == "pdf" else "text"
    how = "whole"
    if sent.get("mode") == "passages":
        shown = ", ".join(sent.get("passages", [])[:6]) + (" …" if len(sent.get("passages", [])) > 6 else "")
        how = f"passages only ({shown or 'none matched'})"
    return f"{name} · {size} · {sent.get('tokens', 0):,} tokens · {how}"


def stable_cut(text: str, tail_chars: int = LIVE_TAIL_CHARS) -> int:
    """Where the settled part of a streaming text ends: a blank line outside code fences, at least
    `tail_chars` back from the end (0 when there is none yet), so later tokens cannot change it."""
    if len(text) <= tail_chars:
        return 0
    cut, fence, pos = 0, "", 0
    limit = len(text) - tail_chars
    for line in text.splitlines(keepends=True):
        if pos > limit:
            break
        m = _FENCE.match(line)
        if m and not fence:
            fence = m.group(1)
        elif m and line.strip().startswith(fence) and not line.strip().strip(fence[0]):
            fence = ""  # a closing fence: the same character, at least as long, nothing after it
        pos += len(line)
        if not fence and not line.strip() and pos <= limit:
            cut = pos
    return cut


@dataclass
class _Live:
    """A streaming answer's document: the settled paragraphs stay, the tail is replaced in place."""

    key: tuple  # (bubble width, last, model name)
    doc: QTextDocument
    head: str  # the markdown already laid out above `tail_at`
    head_blocks: list
    tail_at: int  # cursor position where the tail starts
    revision: int = -1


def _hex(c: QColor) -> str:
    return c.name()


class MessageDelegate(QStyledItemDelegate):
    """Paints a message from a cached QTextDocument; links in it are the message's actions."""

    MARGIN_X, MARGIN_Y, PAD = 20, 8, 12

    def __init__(self, parent=None):
        super().__init__(parent)
        self._docs: dict = {}
        self._blocks: dict = {}
        self._live: dict[int, _Live] = {}
        self.model_name = "Assistant"
        self.selection: tuple[int, int, int] | None = None  # (message id, anchor, position) in its document

    # -- documents --------------------------------------------------------
    def _colors(self, palette: QPalette) -> markdown.Colors:
        dark = palette.color(QPalette.Window).lightness() < 128
        return markdown.Colors(
            text=_hex(palette.color(QPalette.Text)),
            muted=_hex(palette.color(QPalette.PlaceholderText)),
            code_bg="#1f1f23" if dark else "#f3f3f6",
            code_header="#2c2c31" if dark else "#e7e7ec",
            link=_hex(palette.color(QPalette.Link)),
        )

    def _html(self, e: Entry, colors: markdown.Colors, last_assistant: bool) -> str:
        rendered = markdown.render(e.content, colors) if e.content else markdown.Rendered("")
        self._blocks[e.id] = rendered.code_blocks
        return self._header(e, colors) + self._footer(e, colors, last_assistant, rendered.html)

    def _header(self, e: Entry, colors: markdown.Colors) -> str:
        who = "You" if e.role == "user" else html.escape(self.model_name)
        return f'<div style="color: {colors.text};"><p style="margin-bottom: 2px;"><b>{who}</b></p></div>'

    def _footer(self, e: Entry, colors: markdown.Colors, last_assistant: bool, body: str) -> str:
        """The message body from `body` on (its HTML), then the state line and actions."""
        if e.role == "user" and e.attachments:
            sent = {d.get("attachment_id"): d for d in e.stats.get("documents", [])}
            lines = [html.escape(_attachment_line(a, sent.get(getattr(a, "id", None)))) for a in e.attachments]
            body += f'<p style="color: {colors.muted};">' + "<br>".join(f"📎 {x}" for x in lines) + "</p>"
        foot = []
        if e.progress and e.state in ("generating", "waiting"):
            done, total = e.progress
            pct = 100 * done / total if total else 0
            foot.append(f"Reading the prompt: {done:,} / {total:,} tokens ({pct:.0f}%)")
        elif e.state != "complete":
            label = STATE_LABELS.get(e.state, e.state)
            if e.state == "failed" and e.stats.get("error"):
                label += ": " + html.escape(str(e.stats["error"]))
            color = "#d70015" if e.state in ("failed", "interrupted") else colors.muted
            foot.append(f'<span style="color: {color};">{label}</span>')
        if e.role == "assistant" and e.state == "complete" and e.stats.get("generated_tokens"):
            s = e.stats
            foot.append(f"{s['generated_tokens']:,} tokens · {s.get('decode_tps', 0):.1f} tok/s · "
                        f"first token {s.get('ttft_s', 0):.2f} s")
        actions = ['<a href="action:copy">Copy</a>']
        if e.role == "user":
            actions.append('<a href="action:edit">Edit</a>')
        elif last_assistant and e.state not in ("generating", "waiting"):
            actions.append('<a href="action:regenerate">Regenerate</a>')
        link = f"color: {colors.link}; text-decoration: none;"
        actions_html = " &nbsp; ".join(a.replace("<a ", f'<a style="{link}" ') for a in actions)
        foot_html = " · ".join(foot)
        return (
            f'<div style="color: {colors.text};">{body}'
            f'<p style="color: {colors.muted}; font-size: small; margin-top: 4px;">'
            f'{foot_html}{" &nbsp; " if foot_html else ""}{actions_html}</p></div>'
        )

    def _entry(self, index) -> tuple[Entry, bool]:
        # Straight from the model's list: sizeHint runs for every row on each relayout.
        entries = index.model().entries
        row = index.row()
        e = entries[row]
        return e, row == len(entries) - 1 and e.role == "assistant"

    def document(self, index, width: int, palette: QPalette) -> QTextDocument:
        e, last = self._entry(index)
        bubble = self._bubble_width(e, width)
        key = (e.revision, bubble, last, self.model_name)
        cached = self._docs.get(e.id)
        if cached is not None and cached[0] == key:
            return cached[1]
        if e.role == "assistant" and e.state == "generating" and e.content:
            doc = self._live_document(e, (bubble, last, self.model_name), palette)
            self._docs[e.id] = (key, doc)
            return doc
        self._live.pop(e.id, None)
        doc = QTextDocument()
        doc.setDocumentMargin(0)
        doc.setDefaultFont(self.parent().font() if self.parent() else doc.defaultFont())
        doc.setHtml(self._html(e, self._colors(palette), last))
        doc.setTextWidth(bubble - 2 * self.PAD)
        self._docs[e.id] = (key, doc)
        return doc

    def _live_document(self, e: Entry, key: tuple, palette: QPalette) -> QTextDocument:
        """Streaming: lay out only what changed since the last update, not the whole answer again."""
        colors = self._colors(palette)
        cut = stable_cut(e.content)
        live = self._live.get(e.id)
        if live is not None and (live.key != key or not e.content.startswith(live.head) or cut < len(live.head)):
            live = None
        if live is not None and cut > len(live.head) + LIVE_TAIL_CHARS:
            live = None  # the tail grew long: settle more of it (one full layout per ~LIVE_TAIL_CHARS)
        if live is None:
            head = e.content[:cut]
            rendered = markdown.render(head, colors) if head else markdown.Rendered("")
            doc = QTextDocument()
            doc.setDocumentMargin(0)
            doc.setDefaultFont(self.parent().font() if self.parent() else doc.defaultFont())
            doc.setTextWidth(key[0] - 2 * self.PAD)
            doc.setHtml(self._header(e, colors) + (f'<div style="color: {colors.text};">{rendered.html}</div>' if head else ""))
            cursor = QTextCursor(doc)
            cursor.movePosition(QTextCursor.End)
            cursor.insertBlock()  # the tail's first block goes here, not into the last settled one
            live = _Live(key, doc, head, rendered.code_blocks, cursor.position())
            self._live[e.id] = live
        tail = markdown.render(e.content[len(live.head):], colors)
        offset = len(live.head_blocks)
        body = _COPY_LINK.sub(lambda m: f'href="copy-code:{int(m.group(1)) + offset}"', tail.html) if offset else tail.html
        self._blocks[e.id] = live.head_blocks + tail.code_blocks
        cursor = QTextCursor(live.doc)
        cursor.setPosition(live.tail_at)
        cursor.movePosition(QTextCursor.End, QTextCursor.KeepAnchor)
        cursor.insertHtml(self._footer(e, colors, key[1], body))
        return live.doc

    def row_height(self, index, width: int, palette: QPalette) -> int:
        """The row's height; a streaming answer's grows in GROW_STEP_PX steps, so relayouts are rare."""
        e = self._entry(index)[0]
        h = self.document(index, width, palette).size().height() + 2 * self.PAD + 2 * self.MARGIN_Y
        if e.state in ("generating", "waiting"):
            return int(math.ceil(h / GROW_STEP_PX) * GROW_STEP_PX)
        return int(h)

    def code_block(self, message_id: int, i: int) -> str | None:
        blocks = self._blocks.get(message_id, [])
        return blocks[i] if 0 <= i < len(blocks) else None

    def forget(self):
        self._docs.clear()
        self._blocks.clear()
        self._live.clear()

    def _bubble_width(self, e: Entry, width: int) -> int:
        usable = max(200, width - 2 * self.MARGIN_X)
        return min(usable, 760) if e.role == "assistant" else min(int(usable * 0.8), 620)

    def _geometry(self, index, option_rect, palette):
        """The bubble's rect and its document, inside the row's rect."""
        e = self._entry(index)[0]
        width = option_rect.width()
        doc = self.document(index, width, palette)
        bw = self._bubble_width(e, width)
        if e.role == "user":
            natural = min(bw, int(doc.idealWidth()) + 2 * self.PAD + 2)
            x = option_rect.right() - self.MARGIN_X - natural
            bw = natural
        else:
            x = option_rect.left() + self.MARGIN_X + max(0, (width - 2 * self.MARGIN_X - bw) // 2)
        h = doc.size().height() + 2 * self.PAD
        return QRectF(x, option_rect.top() + self.MARGIN_Y, bw, h), doc

    # -- QStyledItemDelegate ----------------------------------------------
    def sizeHint(self, option, index):
        return QSize(option.rect.width(), self.row_height(index, option.rect.width() or 600, option.palette))

    def paint(self, painter: QPainter, option, index):
        e = self._entry(index)[0]
        rect, doc = self._geometry(index, option.rect, option.palette)
        painter.save()
        painter.setRenderHint(QPainter.Antialiasing)
        if e.role == "user":
            dark = option.palette.color(QPalette.Window).lightness() < 128
            path = QPainterPath()
            path.addRoundedRect(rect, 14, 14)
            painter.fillPath(path, QColor("#2b3a55" if dark else "#e8f0fe"))
        doc.setTextWidth(rect.width() - 2 * self.PAD)
        origin = rect.topLeft() + QPointF(self.PAD, self.PAD)
        # Only the part of a long message inside the repainted area is drawn.
        clip = painter.clipBoundingRect().translated(-origin) if painter.hasClipping() else QRectF()
        painter.translate(origin)
        sel = self.selection
        if sel is not None and sel[0] == e.id and sel[1] != sel[2]:
            self._draw_selected(painter, doc, clip, sel, option.palette)
        else:
            doc.drawContents(painter, clip)
        painter.restore()

    def _draw_selected(self, painter, doc, clip, sel, palette):
        """What QTextDocument.drawContents does, plus the mouse selection in the highlight colors."""
        ctx = QAbstractTextDocumentLayout.PaintContext()
        if clip.isValid():
            painter.setClipRect(clip)
            ctx.clip = clip
        part = QAbstractTextDocumentLayout.Selection()
        part.cursor = selection_cursor(doc, sel[1], sel[2])
        fmt = QTextCharFormat()
        fmt.setBackground(palette.color(QPalette.Highlight))
        fmt.setForeground(palette.color(QPalette.HighlightedText))
        part.format = fmt
        ctx.selections = [part]
        doc.documentLayout().draw(painter, ctx)

    def _local(self, index, rect, pos) -> tuple[QTextDocument, QPointF]:
        box, doc = self._geometry(index, rect, self.parent().palette())
        return doc, pos - box.topLeft() - QPointF(self.PAD, self.PAD)

    def anchor_at(self, index, rect, pos) -> str:
        doc, local = self._local(index, rect, pos)
        return doc.documentLayout().anchorAt(local)

    def position_at(self, index, rect, pos) -> int:
        """The character position under `pos` in the row's document (the nearest one when outside the text)."""
        doc, local = self._local(index, rect, pos)
        if local.y() < 0:
            return 0
        if local.y() > doc.size().height():
            return doc.characterCount() - 1
        return max(0, doc.documentLayout().hitTest(local, Qt.FuzzyHit))


def selection_cursor(doc: QTextDocument, anchor: int, position: int) -> QTextCursor:
    # A streaming answer's document is rebuilt underneath a selection: keep the ends inside it.
    end = doc.characterCount() - 1
    cursor = QTextCursor(doc)
    cursor.setPosition(min(anchor, end))
    cursor.setPosition(min(position, end), QTextCursor.KeepAnchor)
    return cursor


class ChatView(QListView):
    """The transcript's view: scrolls by pixel, follows the answer while it streams.

    Text is selected with the mouse inside one message (drag, double-click for a word, ⌘A for the
    whole message) and copied with ⌘C; the delegate paints the selection from the same cached
    document, so streaming renders exactly as before.
    """

    editRequested = Signal(int)  # message id
    regenerateRequested = Signal(int)
    copied = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setObjectName("chatView")
        self.setAccessibleName("Conversation")
        self.transcript = TranscriptModel(self)
        self.delegate = MessageDelegate(self)
        self.setModel(self.transcript)
        self.setItemDelegate(self.delegate)
        self.setVerticalScrollMode(QAbstractItemView.ScrollPerPixel)
        self.verticalScrollBar().setSingleStep(24)
        self.setSelectionMode(QAbstractItemView.NoSelection)
        self.setResizeMode(QListView.Adjust)
        self.setFocusPolicy(Qt.ClickFocus)  # ⌘C and ⌘A reach the view after a click in it
        self.setMouseTracking(True)
        self.setFrameShape(QListView.NoFrame)
        self.setContextMenuPolicy(Qt.DefaultContextMenu)
        self.placeholder = "Ask anything. Everything stays on this Mac."
        self._heights: dict = {}
        self._pressed_at: int | None = None  # the row a left-button drag started in
        self.transcript.rowChanged.connect(self._on_changed)
        self.transcript.rowsInserted.connect(lambda *_: self._follow(force=True))
        self.transcript.modelReset.connect(self._on_reset)

    def _at_bottom(self) -> bool:
        bar = self.verticalScrollBar()
        return bar.value() >= bar.maximum() - 40

    def _follow(self, force=False):
        if force or self._at_bottom():
            self.scrollToBottom()

    def _on_changed(self, top, *_):
        following = self._at_bottom()
        # A relayout asks every row for its size: do it only when this row's height changed,
        # which while streaming is once per wrapped line, not once per update.
        width = self.viewport().width()
        height = self.delegate.row_height(top, width, self.palette())
        e = self.transcript.entries[top.row()]
        if self._heights.get(e.id) != (width, height):
            self._heights[e.id] = (width, height)
            self.delegate.sizeHintChanged.emit(top)
        else:
            self.viewport().update(self.visualRect(top))
        if following:
            self.scrollToBottom()

    def changeEvent(self, event):
        if event.type() == QEvent.PaletteChange:
            self.delegate.forget()  # documents carry the old colors
        super().changeEvent(event)

    def _on_reset(self):
        self._heights.clear()
        sel = self.delegate.selection
        if sel is not None and self.transcript.row_of(sel[0]) < 0:
            self.delegate.selection = None
        self.delegate.forget()
        self.scrollToBottom()

    def set_model_name(self, name: str):
        self.delegate.model_name = name or "Assistant"
        self.viewport().update()

    # -- interaction ------------------------------------------------------
    def _anchor(self, pos):
        index = self.indexAt(pos)
        if not index.isValid():
            return index, ""
        return index, self.delegate.anchor_at(index, self.visualRect(index), QPointF(pos))

    def _select(self, row: int, anchor: int, position: int):
        old = self.delegate.selection
        self.delegate.selection = (self.transcript.entries[row].id, anchor, position)
        if old is not None and old[0] != self.delegate.selection[0]:
            self.viewport().update()
        else:
            self.viewport().update(self.visualRect(self.transcript.index(row)))

    def clear_selection(self):
        if self.delegate.selection is not None:
            self.delegate.selection = None
            self.viewport().update()

    def selected_text(self) -> str:
        sel = self.delegate.selection
        row = self.transcript.row_of(sel[0]) if sel else -1
        if row < 0 or sel[1] == sel[2]:
            return ""
        doc = self.delegate.document(self.transcript.index(row), self.viewport().width(), self.palette())
        return selection_cursor(doc, sel[1], sel[2]).selection().toPlainText()

    def _position(self, row: int, pos) -> int:
        index = self.transcript.index(row)
        return self.delegate.position_at(index, self.visualRect(index), QPointF(pos))

    def mousePressEvent(self, event):
        pos = event.position().toPoint()
        index = self.indexAt(pos)
        self._pressed_at = None
        if event.button() == Qt.LeftButton:
            if index.isValid():
                at = self._position(index.row(), pos)
                self._pressed_at = index.row()
                self._select(index.row(), at, at)
            else:
                self.clear_selection()
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event):
        pos = event.position().toPoint()
        if self._pressed_at is not None and event.buttons() & Qt.LeftButton:
            # Dragging past the message's edges selects to its start or end, not into the next one.
            row = self._pressed_at
            self._select(row, self.delegate.selection[1], self._position(row, pos))
            return
        index, href = self._anchor(pos)
        cursor = Qt.PointingHandCursor if href else Qt.IBeamCursor if index.isValid() else Qt.ArrowCursor
        self.viewport().setCursor(cursor)
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event):
        index, href = self._anchor(event.position().toPoint())
        self._pressed_at = None
        if href and event.button() == Qt.LeftButton and not self.selected_text():
            self.activate(index.data(TranscriptModel.EntryRole), href)
            return
        super().mouseReleaseEvent(event)

    def mouseDoubleClickEvent(self, event):
        pos = event.position().toPoint()
        index = self.indexAt(pos)
        if event.button() != Qt.LeftButton or not index.isValid():
            return super().mouseDoubleClickEvent(event)
        doc = self.delegate.document(index, self.viewport().width(), self.palette())
        cursor = QTextCursor(doc)
        cursor.setPosition(self._position(index.row(), pos))
        cursor.select(QTextCursor.WordUnderCursor)
        self._pressed_at = None
        self._select(index.row(), cursor.anchor(), cursor.position())

    def select_message(self, row: int):
        doc = self.delegate.document(self.transcript.index(row), self.viewport().width(), self.palette())
        self._select(row, 0, doc.characterCount() - 1)

    def keyPressEvent(self, event):
        if event.matches(QKeySequence.Copy) and self.selected_text():
            self._copy(self.selected_text())
        elif event.matches(QKeySequence.SelectAll) and self.delegate.selection is not None:
            row = self.transcript.row_of(self.delegate.selection[0])
            if row >= 0:
                self.select_message(row)
        else:
            super().keyPressEvent(event)

    def activate(self, e: Entry, href: str):
        if href.startswith("copy-code:"):
            code = self.delegate.code_block(e.id, int(href.split(":", 1)[1]))
            if code is not None:
                self._copy(code)
        elif href == "action:copy":
            self._copy(e.content)
        elif href == "action:edit":
            self.editRequested.emit(e.id)
        elif href == "action:regenerate":
            self.regenerateRequested.emit(e.id)

    def _copy(self, text: str):
        QGuiApplication.clipboard().setText(text)
        self.copied.emit(text)

    def contextMenuEvent(self, event):
        index, href = self._anchor(event.pos())
        if not index.isValid():
            return
        e: Entry = index.data(TranscriptModel.EntryRole)
        menu = QMenu(self)
        if self.selected_text():
            menu.addAction("Copy", lambda: self._copy(self.selected_text()))
        if href.startswith("copy-code:"):
            menu.addAction("Copy Code Block", lambda: self.activate(e, href))
        menu.addAction("Copy Message", lambda: self.activate(e, "action:copy"))
        if e.role == "user":
            menu.addAction("Edit and Resubmit…", lambda: self.activate(e, "action:edit"))
        elif index.row() == self.transcript.rowCount() - 1:
            menu.addAction("Regenerate", lambda: self.activate(e, "action:regenerate"))
        menu.exec(event.globalPos())

    def paintEvent(self, event):
        super().paintEvent(event)
        if self.transcript.rowCount() == 0 and self.placeholder:
            p = QPainter(self.viewport())
            p.setPen(self.palette().color(QPalette.PlaceholderText))
            font = p.font()
            font.setPointSizeF(font.pointSizeF() * 1.3)
            p.setFont(font)
            p.drawText(self.viewport().rect(), Qt.AlignCenter | Qt.TextWordWrap, self.placeholder)
            p.end()

