"""Answers in flight: one engine job each, streamed into the store and, when on screen, into the transcript."""

from dataclasses import dataclass

from app import log
from app.engine.errors import FolioError
from app.ui.chat_view import Entry

logger = log.get("ui")


@dataclass
class Answer:
    """One job in flight: where its text goes, and what to give back if it is cancelled before a word."""

    conversation_id: int
    message_id: int
    text: str = ""
    user_message_id: int | None = None  # the message this send added; None for a regenerate
    draft: tuple = ()  # (text, files) the composer held before sending



class Answers:
    """Mixed into MainWindow: `answers` maps job id -> Answer; the engine's signals land here."""

    def start_answer(self, conv_id: int, user_message_id: int | None = None, draft: tuple = ()):
        conv = self.store.get_conversation(conv_id)
        values = self._values(conv)
        messages = self._prompt(conv_id, values)
        msg_id = self.store.begin_stream(conv_id)
        params = {
            "max_tokens": values["max_tokens"], "temperature": values["temperature"], "top_p": values["top_p"],
            "min_p": values["min_p"], "repetition_penalty": values["repetition_penalty"],
        }
        job = self.engine.generate(conv_id, messages, params, values["kv_mode"], values["context_length"])
        self.answers[job] = Answer(conv_id, msg_id, user_message_id=user_message_id, draft=draft)
        if self.model_info.get("model_id"):
            self.store.update_conversation(conv_id, model_id=self.model_info["model_id"])
        waiting = len(self.answers) > 1
        if conv_id == self.conversation_id:
            self.chat.transcript.append(Entry(msg_id, "assistant", "", "waiting" if waiting else "generating"))
            self.composer.set_busy(True)
        self.sidebar.busy.add(conv_id)
        return job

    def stop(self):
        job = self._job_for(self.conversation_id)
        if job is None and self.pending is not None and self.pending.conversation_id == self.conversation_id:
            job = self.pending.request
        if job is not None:
            self.engine.stop(job)
            self.stats.set_state("stopping…")
        elif self.composer.editing is not None:
            self.composer.end_edit()

    def regenerate(self, message_id: int | None):
        conv_id = self.conversation_id
        entries = self.chat.transcript.entries
        if conv_id is None or not entries or self._job_for(conv_id) is not None or not self.model_name:
            return
        last = entries[-1]
        if message_id is not None and message_id != last.id:
            return
        if last.role == "assistant":
            self.store.delete_messages_from(conv_id, last.id)
        self.open_conversation(conv_id)
        self.start_answer(conv_id)

    def edit_message(self, message_id: int):
        if self._job_for(self.conversation_id) is not None:
            return
        row = self.chat.transcript.row_of(message_id)
        if row >= 0:
            self.composer.begin_edit(message_id, self.chat.transcript.entries[row].content)

    # -- engine signals ---------------------------------------------------
    def _visible(self, job: int) -> Answer | None:
        a = self.answers.get(job)
        return a if a and a.conversation_id == self.conversation_id else None

    def _on_started(self, job: int):
        a = self._visible(job)
        if a:
            self.chat.transcript.update(a.message_id, state="generating")

    def _on_progress(self, job: int, done: int, total: int):
        a = self._visible(job)
        if a:
            self.stats.set_state("prefilling", done, total)
            self.chat.transcript.update(a.message_id, progress=(done, total))

    def _on_text(self, job: int, piece: str):
        a = self.answers.get(job)
        if a is None:
            return
        first = not a.text
        a.text += piece
        self.store.update_stream(a.message_id, a.text)
        if a.conversation_id == self.conversation_id:
            self.chat.transcript.update(a.message_id, append=piece, **({"progress": None} if first else {}))
            if first:
                self.stats.set_state("generating")

    def _on_notice(self, text: str):
        self.stats.flash(text, 8000)

    def _on_live(self, job: int, live: dict):
        if self._visible(job):
            self.stats.set_live(live)

    def _on_finished(self, job: int, text: str, stats: dict):
        a = self.answers.pop(job, None)
        if a is None:
            return
        reason = stats.get("finish_reason", "")
        self._settle(a)
        try:
            if reason == "cancelled" and not text:
                # Stopped before the first word (during the prefill): the conversation is as it was,
                # and what was sent goes back into the composer.
                self.store.delete_messages_from(a.conversation_id, a.user_message_id or a.message_id)
                if a.user_message_id is not None:
                    self._restore_draft(a)
            else:
                state = "stopped" if reason in ("stopped", "cancelled") else "complete"
                self.store.finish_message(a.message_id, text, state, stats)
        except FolioError as e:
            self.banner.show_message(str(e), "error")
        if stats.get("context_limit"):
            self.last_stats = stats
            self.stats.set_stats(stats)
        if a.conversation_id == self.conversation_id:
            self.open_conversation(a.conversation_id)
        self.sidebar.refresh()

    def _restore_draft(self, a: Answer):
        if a.conversation_id != self.conversation_id or not a.draft or self.composer.text().strip():
            return
        text, files = a.draft
        self.composer.input.setPlainText(text)
        self.composer.add_files(files)

    def _on_failed(self, job: int, reason: str):
        a = self.answers.pop(job, None)
        if a is None:
            self.banner.show_message(reason, "error")
            return
        self._settle(a)
        try:
            self.store.finish_message(a.message_id, a.text, "failed", {"error": reason})
        except FolioError as e:
            logger.warning("could not record a failure: %s", e)
        if a.conversation_id == self.conversation_id:
            self.open_conversation(a.conversation_id)
            self.banner.show_message(reason, "error")
        self.sidebar.refresh()

    def _settle(self, a: Answer):
        self.sidebar.busy.discard(a.conversation_id)
        self.stats.set_state("idle" if not self.answers else "generating")
        if a.conversation_id == self.conversation_id:
            self.composer.set_busy(False)
