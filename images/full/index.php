<?php
// The page of the full-web image (apache2 + mod_php): names the VM, its tier and its host
// (tw.vm, tw.tier, tw.host of the kernel command line) and shows a row of the db tier,
// read from the first endpoint in /run/tw/backends that answers (tw-endpoints keeps that
// list from the controller's API or tw.backends). 503 when no database answers.
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
<?php else: ?>
<p>No database answered: <?= e($errors ? implode('; ', $errors) : 'no endpoints') ?>.</p>
<?php endif; ?>
</body></html>
