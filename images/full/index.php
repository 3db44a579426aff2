<?php
// The page of the full-web image (apache2 + mod_php): names the VM, its tier and its host
// (tw.vm, tw.tier, tw.host of the kernel command line) and shows a row of the db tier,
// read from the first endpoint in /run/tw/backends that answers (tw-endpoints keeps that
// list from the controller's API or tw.backends). 503 when no database answers.
// POST message=TEXT writes a row (201); GET /?message=TEXT shows that row (404: none).
mysqli_report(MYSQLI_REPORT_OFF);

$tw = [];
foreach (preg_split('/\s+/', trim((string)@file_get_contents('/proc/cmdline'))) as $arg) {
  if (strncmp($arg, 'tw.', 3) === 0 && strpos($arg, '=') !== false) {
    [$key, $value] = explode('=', substr($arg, 3), 2);
    $tw[$key] = $value;
  }
}
$vm = $tw['vm'] ?? gethostname();
$tier = $tw['tier'] ?? '';
$host = $tw['host'] ?? '';

// Runs $query on each endpoint of /run/tw/backends in turn until one returns a result
// (null: try the next). [result, "host:port"], or [null, ""]; $answered counts the
// databases that took the connection.
function on_first_db(callable $query, array &$errors, int &$answered) {
  foreach (@file('/run/tw/backends', FILE_IGNORE_NEW_LINES | FILE_SKIP_EMPTY_LINES) ?: [] as $line) {
    $parts = preg_split('/\s+/', trim($line));
    if (count($parts) < 2) continue;
    [$h, $p] = $parts;
    $db = mysqli_init();
    $db->options(MYSQLI_OPT_CONNECT_TIMEOUT, 2);
    $db->options(MYSQLI_OPT_READ_TIMEOUT, 3);
    if (!@$db->real_connect($h, 'tw', 'tw-web', 'tw', (int)$p)) {
      $errors[] = "$h:$p: " . mysqli_connect_error();
      continue;
    }
    $answered++;
    $result = $query($db);
    $error = $db->error;
    $db->close();
    if ($result !== null) return [$result, "$h:$p"];
    $errors[] = "$h:$p: " . ($error ?: 'no row');
  }
  return [null, ''];
}

// One row: the first, or (?message=TEXT) the first with that message.
function read_row(mysqli $db, ?string $message) {
  $sql = 'SELECT id, message, @@hostname AS server FROM items'
       . ($message === null ? '' : ' WHERE message = ?') . ' ORDER BY id LIMIT 1';
  $stmt = $db->prepare($sql);
  if (!$stmt) return null;
  if ($message !== null) $stmt->bind_param('s', $message);
  if (!$stmt->execute()) return null;
  $r = $stmt->get_result()->fetch_assoc();
  return $r ?: null;
}

$errors = [];
$answered = 0;
$stored = null;
$status = 200;
if ($_SERVER['REQUEST_METHOD'] === 'POST') {
  // The form below (and tests/e2e/e2e_full_test.sh): writes one row to the db tier.
  $message = trim((string)($_POST['message'] ?? ''));
  if ($message === '' || strlen($message) > 200) {
    $status = 400;
    $errors[] = 'message: 1 to 200 bytes';
  } else {
    [$stored, $db_at] = on_first_db(function (mysqli $db) use ($message) {
      $stmt = $db->prepare('INSERT INTO items (message) VALUES (?)');
      if (!$stmt) return null;
      $stmt->bind_param('s', $message);
      if (!$stmt->execute()) return null;
      $server = $db->query('SELECT @@hostname AS server');
      return ['id' => $db->insert_id, 'message' => $message,
              'server' => $server ? ($server->fetch_assoc()['server'] ?? '') : ''];
    }, $errors, $answered);
    $status = $stored === null ? 503 : 201;
  }
  $row = null;
} else {
  $find = isset($_GET['message']) ? (string)$_GET['message'] : null;
  [$row, $db_at] = on_first_db(fn(mysqli $db) => read_row($db, $find), $errors, $answered);
  // No database answered: 503. ?message=TEXT that no database has: 404.
  if ($row === null) $status = ($find !== null && $answered > 0) ? 404 : 503;
}

http_response_code($status);
header('Content-Type: text/html; charset=utf-8');
header('Cache-Control: no-store');
function e($s) { return htmlspecialchars((string)$s, ENT_QUOTES); }
?>
<!doctype html>
<html><head><meta charset="utf-8"><title><?= e($vm) ?></title></head>
<body><h1>tierwarden: <?= e($vm) ?></h1>
<p>VM <b><?= e($vm) ?></b> of tier <b><?= e($tier) ?></b> on host <b><?= e($host) ?></b>.</p>
<?php if ($stored !== null): ?>
<p>Stored row <b><?= e($stored['id']) ?>: <?= e($stored['message']) ?></b> on database server <b><?= e($stored['server']) ?></b> at <?= e($db_at) ?>.</p>
<?php elseif ($row !== null): ?>
<p>Row <b><?= e($row['id']) ?>: <?= e($row['message']) ?></b> from database server <b><?= e($row['server']) ?></b> at <?= e($db_at) ?>.</p>
<?php else: ?>
<p><?= $status === 404 ? 'No row with that message' : ($status === 400 ? 'Not written' : 'No database answered') ?>:
<?= e($errors ? implode('; ', $errors) : 'no endpoints') ?>.</p>
<?php endif; ?>
<form method="post" action="/"><input name="message" maxlength="200" placeholder="a row for the db tier">
<button>Write a row</button></form>
</body></html>
