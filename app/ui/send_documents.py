"""Sending with documents: read and planned on the engine thread first, stored only once the plan is known."""

from dataclasses import dataclass

from app.engine.errors import FolioError


@dataclass
class Pending:
    """A send whose documents the engine thread is reading and planning; nothing is stored yet."""

    request: int
    conversation_id: int
    text: str
    files: list  # paths of new attachments
    stored: list  # dicts of documents already in the store (an edited message's)
    editing: int | None
    passages_ok: bool = False  # the user saw that they do not fit whole and chose passages


class DocumentSending:
    """Mixed into MainWindow: `send` hands a message with documents to `_prepare`; `_on_prepared` commits it."""

    def _stored_documents(self, message_id: int) -> list[dict]:
        """An edited message's documents, from the store: they go with the new text."""
        for m in self.store.messages(self.conversation_id):
            if m.id == message_id:
                kinds = {d.get("attachment_id"): d.get("kind", "pdf") for d in m.stats.get("documents", [])}
                return [{"attachment_id": a.id, "name": a.file_name, "kind": kinds.get(a.id, "pdf"),
                         "sha256": a.sha256, "text": a.text} for a in m.attachments]
        return []

    def _prepare(self, p: Pending):
        """Ask the engine thread to read and plan the documents; the send completes in `_on_prepared`."""
        conv = self.store.get_conversation(p.conversation_id)
        values = self._values(conv)
        history = self._prompt(p.conversation_id, values, before=p.editing)
        messages = history + [{"role": "user", "content": p.text}]
        p.request = self.engine.prepare(p.conversation_id, messages, [*p.stored, *map(str, p.files)],
                                        values["kv_mode"], values["context_length"])
        self.pending = p
        self.composer.set_busy(True)
        self.stats.set_state("reading documents…")

    def _on_prepared(self, request: int, plan: dict):
        p = self.pending
        if p is None or p.request != request:
            return
        if not plan["fits"] and plan["larger_context"] and not p.passages_ok:
            # Not silently: say so with the numbers, offer the larger context, or passages on a second Send.
            self.pending = None
            self._settle_pending(p)
            names = ", ".join(d["name"] for d in plan["documents"] if d["mode"] != "full")
            self.banner.show_message(
                f"{names} does not fit whole. {plan['reason']} Send again for the most relevant passages only.",
                "warning", f"Use {plan['larger_context']:,} Tokens of Context",
                lambda n=plan["larger_context"], c=p.conversation_id: self._widen_context(c, n),
            )
            self._offer = (p.conversation_id, p.text, list(p.files))
            return
        self.pending = None
        self._commit(p, plan)

    def _widen_context(self, conv_id: int, tokens: int):
        conv = self.store.get_conversation(conv_id)
        self.store.update_conversation(conv_id, settings={**(conv.settings or {}), "context_length": tokens})
        self.banner.hide()
        self._offer = None
        if conv_id == self.conversation_id and self.composer.text().strip():
            self.composer.send()

    def _on_prepare_failed(self, request: int, reason: str):
        p = self.pending
        if p is None or p.request != request:
            return
        self.pending = None
        self._settle_pending(p)
        if reason:  # "" is a cancel: the composer still holds everything
            self.banner.show_message(reason, "error")

    def _settle_pending(self, p: Pending):
        if p.conversation_id == self.conversation_id:
            self.composer.set_busy(False)
        self.stats.set_state("idle" if not self.answers else "generating")

    def _commit(self, p: Pending, plan: dict):
        """Store the documents and the message, then answer. What the model read is kept with the
        message, so later turns send exactly the same prompt (and reuse its cache)."""
        conv_id = p.conversation_id
        try:
            known = {(a.file_name, a.sha256): a.id for a in self.store.attachments(conv_id)}
            ids, sent = [], []
            for d in plan["documents"]:
                att = known.get((d["name"], d["sha256"])) or self.store.add_attachment(
                    conv_id, d["name"], d["sha256"], d["pages"], d["text"], d["tokens"])
                ids.append(att)
                sent.append({"attachment_id": att, **{k: d[k] for k in ("name", "kind", "pages", "tokens", "mode", "passages")}})
            if p.editing is not None:
                self.store.delete_messages_from(conv_id, p.editing)
            user_id = self.store.add_message(conv_id, "user", p.text, attachment_ids=ids,
                                             stats={"documents": sent, "prompt": plan["message"]})
        except FolioError as e:
            self._settle_pending(p)
            self.banner.show_message(str(e), "error")
            return
        on_screen = conv_id == self.conversation_id
        if on_screen:
            self.composer.clear()
            self.composer.keep_only(self.composer.failed_files())
        self.open_conversation(self.conversation_id)
        self.sidebar.refresh()
        notes = [w for w in plan["warnings"] if "does not fit" in w or "passages" in w]
        if notes and on_screen:
            self.banner.show_message(" ".join(notes), "info")
        self.start_answer(conv_id, user_id, (p.text, list(p.files)))

    def _inspect_documents(self, paths: list):
        """Ask the engine thread what each attached document costs in this conversation."""
        if not paths:
            return
        conv = self.store.get_conversation(self.conversation_id) if self.conversation_id is not None else None
        values = self._values(conv)
        messages = self._prompt(conv.id, values) if conv else []
        self.engine.inspect_documents(paths, messages, values["kv_mode"], values["context_length"])
