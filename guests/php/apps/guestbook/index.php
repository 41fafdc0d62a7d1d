<?php
// A guestbook on SQLite: the demo's PHP app. The database lives in /data, the one writable
// directory the server grants besides /tmp.
$db = new PDO('sqlite:/data/guestbook.db');
$db->setAttribute(PDO::ATTR_ERRMODE, PDO::ERRMODE_EXCEPTION);
$db->exec('CREATE TABLE IF NOT EXISTS entries (id INTEGER PRIMARY KEY, name TEXT, message TEXT, at TEXT)');

if ($_SERVER['REQUEST_METHOD'] === 'POST') {
    $name = trim($_POST['name'] ?? '');
    $message = trim($_POST['message'] ?? '');
    if ($name !== '' && $message !== '') {
        $db->prepare('INSERT INTO entries (name, message, at) VALUES (?, ?, ?)')
           ->execute([mb_substr($name, 0, 60), mb_substr($message, 0, 500), gmdate('Y-m-d H:i')]);
    }
    header('Location: ' . $_SERVER['SCRIPT_NAME'], true, 303);
    exit;
}
$entries = $db->query('SELECT name, message, at FROM entries ORDER BY id DESC LIMIT 50')->fetchAll();
$h = fn ($s) => htmlspecialchars($s, ENT_QUOTES);
?>
<!doctype html>
<meta charset="utf-8">
<title>Guestbook — PHP <?= PHP_VERSION ?> on WebAssembly</title>
<h1>Guestbook</h1>
<p>PHP <?= PHP_VERSION ?> as php-cgi.wasm, SQLite <?= $h($db->query('SELECT sqlite_version()')->fetchColumn()) ?>.</p>
<form method="post">
  <input name="name" placeholder="Your name" required>
  <input name="message" placeholder="A message" size="40" required>
  <button>Sign</button>
</form>
<ul>
<?php foreach ($entries as $e): ?>
  <li><b><?= $h($e['name']) ?></b> (<?= $h($e['at']) ?>): <?= $h($e['message']) ?></li>
<?php endforeach ?>
</ul>
