-- Run once at build time (mariadbd --bootstrap) on the full-db image's fresh data dir:
-- the database the web tier reads, one row, and the account it reads it with (from any
-- address: through slirp, connections come from 10.0.2.2). Bootstrap mode starts without
-- the grant tables; FLUSH PRIVILEGES loads them, so that CREATE USER works.
FLUSH PRIVILEGES;
CREATE DATABASE tw CHARACTER SET utf8mb4;
CREATE TABLE tw.items (
  id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  message VARCHAR(200) NOT NULL,
  created TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
) ENGINE=InnoDB;
INSERT INTO tw.items (message) VALUES ('hello from the tierwarden db tier');
CREATE USER 'tw'@'%' IDENTIFIED BY 'tw-web';
GRANT SELECT, INSERT, UPDATE, DELETE ON tw.* TO 'tw'@'%';
-- mariadb-install-db also let root proxy from the build machine's host name: not here.
DELETE FROM mysql.proxies_priv WHERE Host <> 'localhost';
