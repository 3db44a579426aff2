<?php
// The page of the full-web image (apache2 + mod_php): names the VM, its tier and its host
// (tw.vm, tw.tier, tw.host of the kernel command line) and shows a row of the db tier,
// read from the first endpoint in /run/tw/backends that answers (tw-endpoints keeps that
// list from the controller's API or tw.backends). 503 when no database answers.
// POST message=TEXT writes a row with that message to that database (issue #15: the data
// survives a host crash on shared storage); GET ?find=TEXT shows the newest row with that
// message (404 when that database has none).
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

$row = null;
$db_at = '';
$errors = [];
$wrote = null;   // [id, message] of the row this POST wrote
$find = isset($_GET['find']) ? (string)$_GET['find'] : null;
$found = null;   // [id, message] of the newest row with message $find
$post = $_SERVER['REQUEST_METHOD'] === 'POST' ? (string)($_POST['message'] ?? '') : null;
if ($post !== null && ($post === '' || strlen($post) > 200)) {
  http_response_code(400);
  header('Content-Type: text/plain; charset=utf-8');
  echo "message: expected 1 to 200 bytes\n";
  exit;
}
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
  if ($post !== null) {
    $st = $db->prepare('INSERT INTO items (message) VALUES (?)');
    if (!$st || !$st->bind_param('s', $post) || !$st->execute()) {
      $errors[] = "$h:$p: " . $db->error;
      $db->close();
      continue;
    }
    $wrote = [$db->insert_id, $post];
  }
  if ($find !== null) {
    $st = $db->prepare('SELECT id, message FROM items WHERE message = ? ORDER BY id DESC LIMIT 1');
    if ($st && $st->bind_param('s', $find) && $st->execute()) {
      $st->bind_result($fid, $fmessage);
      if ($st->fetch()) $found = [$fid, $fmessage];
      $st->close();
    }
  }
  $result = $db->query('SELECT id, message, @@hostname AS server FROM items ORDER BY id LIMIT 1');
  if ($result && ($r = $result->fetch_assoc())) {
    $row = $r;
    $db_at = "$h:$p";
    $db->close();
    break;
  }
  $errors[] = "$h:$p: " . ($result ? 'no row' : $db->error);
  $db->close();
}

if ($row === null) http_response_code(503);
elseif ($find !== null && $found === null) http_response_code(404);
header('Content-Type: text/html; charset=utf-8');
header('Cache-Control: no-store');
function e($s) { return htmlspecialchars((string)$s, ENT_QUOTES); }
?>
<!doctype html>
<html><head><meta charset="utf-8"><title><?= e($vm) ?></title></head>
<body><h1>tierwarden: <?= e($vm) ?></h1>
<p>VM <b><?= e($vm) ?></b> of tier <b><?= e($tier) ?></b> on host <b><?= e($host) ?></b>.</p>
<?php if ($row !== null): ?>
<p>Row <b><?= e($row['id']) ?>: <?= e($row['message']) ?></b> from database server <b><?= e($row['server']) ?></b> at <?= e($db_at) ?>.</p>
<?php if ($wrote !== null): ?>
<p>Wrote row <b><?= e($wrote[0]) ?>: <?= e($wrote[1]) ?></b>.</p>
<?php endif; ?>
<?php if ($find !== null): ?>
<p><?= $found !== null ? 'Found row <b>' . e($found[0]) . ': ' . e($found[1]) . '</b>.' : 'No row with message <b>' . e($find) . '</b>.' ?></p>
<?php endif; ?>
<form method="post"><input name="message" maxlength="200"> <button>Write a row</button></form>
<?php else: ?>
<p>No database answered: <?= e($errors ? implode('; ', $errors) : 'no endpoints') ?>.</p>
<?php endif; ?>
</body></html>
