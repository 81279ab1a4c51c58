-- flotilla schema, version 2: queue wake-ups leave the database.
--
-- The insert trigger sent NOTIFY inside every enqueuing transaction (the
-- execute transaction included): a committing transaction that notifies
-- holds the server's notification lock until its commit is flushed, so
-- every execute commit serialized behind the others. PgQueue now wakes its
-- own process's receivers after commit and sends one NOTIFY per queue for
-- the others from a background task, coalescing enqueues made meanwhile.
-- A writer inserting into queue_messages by hand wakes nobody: receivers
-- find its messages when their wait ends.
DROP TRIGGER IF EXISTS queue_messages_notify ON queue_messages;
DROP FUNCTION IF EXISTS flotilla_queue_notify();
