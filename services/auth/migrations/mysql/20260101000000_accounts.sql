-- Confirmed addresses, sign-out-everywhere and one-use account tokens.
-- Accounts from before confirmation existed keep getting their mail.
ALTER TABLE users
    ADD COLUMN email_confirmed SMALLINT NOT NULL DEFAULT 0 CHECK (email_confirmed IN (0, 1));
UPDATE users SET email_confirmed = 1;
-- Tokens carry the version they were issued under; raising it (sign out
-- everywhere, a new password, disabling) ends every older token.
ALTER TABLE users ADD COLUMN token_version BIGINT NOT NULL DEFAULT 0;
-- Every raise, for the gateways that check tokens locally (they poll it);
-- kept one token lifetime, after which the older tokens have expired anyway.
CREATE TABLE token_revocations (
    id         BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id    BIGINT NOT NULL,
    version    BIGINT NOT NULL,
    revoked_at BIGINT NOT NULL,
    INDEX token_revocations_at (revoked_at)
) ENGINE = InnoDB;
-- Links mailed to the owner of an address (confirm it, reset the
-- password): only a SHA-256 of each is stored, used once, expiring.
CREATE TABLE account_tokens (
    token_hash CHAR(64)    NOT NULL PRIMARY KEY,
    user_id    BIGINT      NOT NULL,
    purpose    VARCHAR(16) NOT NULL,
    created_at BIGINT      NOT NULL,
    expires_at BIGINT      NOT NULL,
    used_at    BIGINT,
    INDEX account_tokens_user (user_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
