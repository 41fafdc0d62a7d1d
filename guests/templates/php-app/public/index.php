<?php
// {{name}}: every URL that names no file comes here (a front controller).
$db = new PDO('sqlite:/data/app.db');
$db->setAttribute(PDO::ATTR_ERRMODE, PDO::ERRMODE_EXCEPTION);
$db->exec('CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL)');

$path = parse_url($_SERVER['REQUEST_URI'], PHP_URL_PATH);
$method = $_SERVER['REQUEST_METHOD'];
$h = fn ($s) => htmlspecialchars($s, ENT_QUOTES);

if ($method === 'POST' && $path === '/notes') {
    $text = trim($_POST['text'] ?? '');
    if ($text === '') {
        http_response_code(400);
        echo "A note needs some text.\n";
        exit;
    }
    $db->prepare('INSERT INTO notes (text) VALUES (?)')->execute([$text]);
    header('Location: /', true, 303);
    exit;
}
if ($method === 'GET' && $path === '/api/notes') {
    header('Content-Type: application/json');
    echo json_encode($db->query('SELECT id, text FROM notes ORDER BY id')->fetchAll(PDO::FETCH_ASSOC)), "\n";
    exit;
}
if ($method !== 'GET' || ($path !== '/' && $path !== '/index.php')) {
    http_response_code(404);
    echo "Not Found\n";
    exit;
}
$notes = $db->query('SELECT text FROM notes ORDER BY id DESC')->fetchAll(PDO::FETCH_COLUMN);
?>
<!doctype html>
<meta charset="utf-8">
<title>{{name}}</title>
<h1>{{name}}</h1>
<form method="post" action="/notes">
  <input name="text" placeholder="A note" required>
  <button>Add</button>
</form>
<ul>
<?php foreach ($notes as $note): ?>
  <li><?= $h($note) ?></li>
<?php endforeach ?>
</ul>
