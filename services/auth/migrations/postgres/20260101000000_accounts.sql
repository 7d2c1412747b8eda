-- Confirmed addresses, sign-out-everywhere and one-use account tokens.
-- Accounts from before confirmation existed keep getting their mail.
ALTER TABLE users ADD COLUMN email_confirmed BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE users SET email_confirmed = TRUE;
-- Tokens carry the version they were issued under; raising it (sign out
-- everywhere, a new password, disabling) ends every older token.
ALTER TABLE users ADD COLUMN token_version BIGINT NOT NULL DEFAULT 0;
-- Every raise, for the gateways that check tokens locally (they poll it);
-- kept one token lifetime, after which the older tokens have expired anyway.
CREATE TABLE token_revocations (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    BIGINT NOT NULL,
    version    BIGINT NOT NULL,
    revoked_at BIGINT NOT NULL
);
CREATE INDEX token_revocations_at ON token_revocations (revoked_at);
-- Links mailed to the owner of an address (confirm it, reset the
-- password): only a SHA-256 of each is stored, used once, expiring.
CREATE TABLE account_tokens (
    token_hash TEXT   NOT NULL PRIMARY KEY,
    user_id    BIGINT NOT NULL,
    purpose    TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX account_tokens_user ON account_tokens (user_id);
