-- Confirmed addresses, sign-out-everywhere and one-use account tokens.
-- Accounts from before confirmation existed keep getting their mail.
ALTER TABLE users
    ADD COLUMN email_confirmed INTEGER NOT NULL DEFAULT 0 CHECK (email_confirmed IN (0, 1));
UPDATE users SET email_confirmed = 1;
-- Tokens carry the version they were issued under; raising it (sign out
-- everywhere, a new password, disabling) ends every older token.
ALTER TABLE users ADD COLUMN token_version INTEGER NOT NULL DEFAULT 0;
-- Every raise, for the gateways that check tokens locally (they poll it);
-- kept one token lifetime, after which the older tokens have expired anyway.
CREATE TABLE token_revocations (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    INTEGER NOT NULL,
    version    INTEGER NOT NULL,
    revoked_at INTEGER NOT NULL
);
CREATE INDEX token_revocations_at ON token_revocations (revoked_at);
-- Links mailed to the owner of an address (confirm it, reset the
-- password): only a SHA-256 of each is stored, used once, expiring.
CREATE TABLE account_tokens (
    token_hash TEXT    NOT NULL PRIMARY KEY,
    user_id    INTEGER NOT NULL,
    purpose    TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);
CREATE INDEX account_tokens_user ON account_tokens (user_id);
