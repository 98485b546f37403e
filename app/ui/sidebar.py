"""The sidebar: conversations newest first, a search box over every message, new/rename/delete (with undo)."""

import html
import time

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QHBoxLayout, QInputDialog, QLabel, QLineEdit, QListWidget, QListWidgetItem, QMenu, QToolButton,
    QVBoxLayout, QWidget,
)

ID_ROLE = Qt.UserRole + 1
MESSAGE_ROLE = Qt.UserRole + 2


def _when(ts: float) -> str:
    age = time.time() - ts
    if age < 60:
        return "now"
    if age < 3600:
        return f"{int(age // 60)} min"
    if age < 86400:
        return time.strftime("%H:%M", time.localtime(ts))
    return time.strftime("%d %b", time.localtime(ts))


class Sidebar(QWidget):
    conversationSelected = Signal(int)
    searchHitSelected = Signal(int, int)  # conversation id, message id
    newRequested = Signal()
    renameRequested = Signal(int, str)
    deleteRequested = Signal(int)

    def __init__(self, store, parent=None):
        super().__init__(parent)
        self.setObjectName("sidebar")
        self.store = store
        self.current: int | None = None
        self.busy: set[int] = set()
        self.hidden: set[int] = set()  # deleted, still undoable: in the store but not listed

        self.search = QLineEdit()
        self.search.setObjectName("searchBox")
        self.search.setPlaceholderText("Search")
        self.search.setAccessibleName("Search conversations")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(self.refresh)
        self.new_button = QToolButton(text="+")
        self.new_button.setObjectName("newChatButton")
        self.new_button.setToolTip("New chat (⌘N)")
        self.new_button.setAccessibleName("New chat")
        self.new_button.clicked.connect(self.newRequested)

        self.list = QListWidget()
        self.list.setObjectName("conversationList")
        self.list.setAccessibleName("Conversations")
        self.list.setWordWrap(True)
        self.list.setContextMenuPolicy(Qt.CustomContextMenu)
        self.list.customContextMenuRequested.connect(self._menu)
        self.list.itemActivated.connect(self._chosen)
        self.list.itemClicked.connect(self._chosen)
        delete = QShortcut(QKeySequence.Delete, self.list, context=Qt.WidgetShortcut)
        delete.activated.connect(self._delete_current)
        backspace = QShortcut(QKeySequence(Qt.CTRL | Qt.Key_Backspace), self.list, context=Qt.WidgetShortcut)
        backspace.activated.connect(self._delete_current)
        self.empty = QLabel("No matches")
        self.empty.setObjectName("sidebarEmpty")
        self.empty.setAlignment(Qt.AlignCenter)
        self.empty.setVisible(False)

        top = QHBoxLayout()
        top.setContentsMargins(10, 10, 10, 6)
        top.addWidget(self.search, 1)
        top.addWidget(self.new_button)
        box = QVBoxLayout(self)
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(0)
        box.addLayout(top)
        box.addWidget(self.list, 1)
        box.addWidget(self.empty)

    def refresh(self):
        query = self.search.text().strip()
        self.list.blockSignals(True)
        self.list.clear()
        if query:
            hits = self.store.search(query)
            hits = [h for h in hits if h.conversation_id not in self.hidden]
            for hit in hits:
                item = QListWidgetItem()
                # Snippets are HTML-escaped with <b> around matches: show them as rich text.
                label = QLabel(f"<b>{html.escape(hit.title)}</b><br><span>{hit.snippet}</span>")
                label.setTextFormat(Qt.RichText)
                label.setWordWrap(True)
                label.setContentsMargins(8, 4, 8, 4)
                label.setAttribute(Qt.WA_TransparentForMouseEvents)
                item.setData(ID_ROLE, hit.conversation_id)
                item.setData(MESSAGE_ROLE, hit.message_id)
                item.setData(Qt.AccessibleTextRole, f"{hit.title}: {_plain(hit.snippet)}")
                item.setSizeHint(label.sizeHint())
                self.list.addItem(item)
                self.list.setItemWidget(item, label)
            self.empty.setVisible(not hits)
        else:
            self.empty.setVisible(False)
            for conv in self.store.list_conversations():
                if conv.id in self.hidden:
                    continue
                mark = "● " if conv.id in self.busy else ""
                item = QListWidgetItem(f"{mark}{conv.title}\n{_when(conv.updated)}")
                item.setData(ID_ROLE, conv.id)
                item.setToolTip(conv.title)
                self.list.addItem(item)
                if conv.id == self.current:
                    item.setSelected(True)
                    self.list.setCurrentItem(item)
        self.list.blockSignals(False)

    def select(self, conv_id: int | None):
        self.current = conv_id
        for i in range(self.list.count()):
            item = self.list.item(i)
            if item.data(ID_ROLE) == conv_id and item.data(MESSAGE_ROLE) is None:
                self.list.blockSignals(True)
                self.list.setCurrentItem(item)
                self.list.blockSignals(False)

    def conversation_ids(self) -> list[int]:
        return [self.list.item(i).data(ID_ROLE) for i in range(self.list.count())]

    def focus_search(self):
        self.search.setFocus()
        self.search.selectAll()

    def _chosen(self, item):
        conv_id = item.data(ID_ROLE)
        msg_id = item.data(MESSAGE_ROLE)
        if msg_id is not None:
            self.searchHitSelected.emit(conv_id, msg_id)
        elif conv_id != self.current:
            self.conversationSelected.emit(conv_id)

    def _menu(self, pos):
        item = self.list.itemAt(pos)
        if item is None:
            return
        conv_id = item.data(ID_ROLE)
        menu = QMenu(self)
        menu.addAction("Rename…", lambda: self.ask_rename(conv_id))
        menu.addAction("Delete", lambda: self.deleteRequested.emit(conv_id))
        menu.exec(self.list.viewport().mapToGlobal(pos))

    def ask_rename(self, conv_id: int):
        title = self.store.get_conversation(conv_id).title
        new, ok = QInputDialog.getText(self, "Rename Chat", "Title:", QLineEdit.Normal, title)
        if ok and new.strip():
            self.renameRequested.emit(conv_id, new.strip())

    def _delete_current(self):
        item = self.list.currentItem()
        if item is not None:
            self.deleteRequested.emit(item.data(ID_ROLE))


def _plain(snippet: str) -> str:
    return html.unescape(snippet.replace("<b>", "").replace("</b>", ""))
