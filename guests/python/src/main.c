/* The interpreter's entry point, in place of CPython's Programs/python.c.
 *
 * `wizer-initialize` starts Python and imports what CGI scripts use; the build snapshots memory
 * right after it (`wasmbridge wizer`), so a request begins with a warm interpreter. `main` then
 * does only per-run work: the run's environment, sys.argv and sys.path, a fresh random seed,
 * and the script. Without a snapshot, main initializes first, so the same binary also runs
 * plain.
 *
 * `--wsgi MODULE:CALLABLE` serves a WSGI app through the gateway in wasmbridge_wsgi.py: one
 * request from the CGI environment, or, in a CGI worker, request after request from the
 * worker channel, which the builtin module `_wasmbridge` reaches. `wasmbridge-warm` is a second
 * snapshot step that imports an app's modules (PYTHON_WARM), so that fresh instances start
 * with the app loaded.
 *
 * Usage: python.wasm SCRIPT [ARG...] | -c CODE [ARG...] | -m MODULE [ARG...]
 *                    | --wsgi MODULE:CALLABLE
 */
#include <Python.h>
#include <errno.h>
#include <stdint.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <wasi/libc-environ.h>

extern char **environ;
/* CPython's own SystemExit handling (pythonrun.c): exit code from the exception, 0 for None. */
extern int _Py_HandleSystemExit(int *exitcode);

/* Imported once into the snapshot; a script's own `import` of these then costs nothing. `cgi`
 * is deprecated in 3.11: its warning is for authors, not for every request's log. */
static const char PRELOAD[] =
    "import warnings\n"
    "with warnings.catch_warnings():\n"
    "    warnings.simplefilter('ignore', DeprecationWarning)\n"
    "    import cgi, cgitb\n"
    "import base64, binascii, collections, datetime, decimal, email.message, email.parser\n"
    "import email.utils, functools, hashlib, hmac, html, http.cookies, io, itertools, json\n"
    "import math, mimetypes, os, pathlib, random, re, shutil, string, struct, tempfile\n"
    "import textwrap, time, traceback, types, typing, urllib.parse, uuid\n"
    "import wasmbridge_wsgi, wsgiref.util\n";

static int initialized;

/* Constructors are run by each entry point itself. Because this file calls them, wasm-ld does
 * not wrap every export in a call to them, as it does for a command that leaves them to it:
 * wrapped, cabi_realloc would run them in the middle of the host's call to the worker
 * channel, where they may not call WASI (the clocks' constructor does), and trap. Each run
 * calls them again, as the wrapper of _start did: the preopens are the run's. */
extern void __wasm_call_ctors(void);

/* The worker channel (wasmbridge:worker/channel, see wit/worker/channel.wit): the host's import,
 * not a file descriptor, so nothing an app does with files reaches it. */
typedef struct {
    uint8_t *ptr;
    size_t len;
} channel_bytes;

__attribute__((import_module("wasmbridge:worker/channel@0.1.0"), import_name("read")))
extern void channel_read(int32_t max, channel_bytes *got);
__attribute__((import_module("wasmbridge:worker/channel@0.1.0"), import_name("write")))
extern int32_t channel_write(const void *data, size_t len);

/* _wasmbridge.read(max) -> bytes: up to max bytes from the server, b'' when it has closed. */
static PyObject *wasmbridge_read(PyObject *self, PyObject *arg) {
    (void)self;
    long max = PyLong_AsLong(arg);
    if (max == -1 && PyErr_Occurred()) return NULL;
    channel_bytes got = {NULL, 0};
    channel_read((int32_t)(max > 0 && max < INT32_MAX ? max : INT32_MAX), &got);
    /* The host allocated it with cabi_realloc, which is malloc. */
    PyObject *bytes = PyBytes_FromStringAndSize((const char *)got.ptr, (Py_ssize_t)got.len);
    free(got.ptr);
    return bytes;
}

/* _wasmbridge.write(data) -> bool: all of data to the server; False when it has closed. */
static PyObject *wasmbridge_write(PyObject *self, PyObject *arg) {
    (void)self;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    int32_t ok = channel_write(view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    return PyBool_FromLong(ok);
}

static PyMethodDef wasmbridge_methods[] = {
    {"read", wasmbridge_read, METH_O, "read(max) -> bytes from the worker channel"},
    {"write", wasmbridge_write, METH_O, "write(data) -> bool, to the worker channel"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef wasmbridge_module = {
    PyModuleDef_HEAD_INIT, "_wasmbridge", "wasmbridge's worker channel", -1, wasmbridge_methods,
};

static PyObject *wasmbridge_init(void) { return PyModule_Create(&wasmbridge_module); }

static void initialize(void) {
    PyConfig config;
    PyConfig_InitPythonConfig(&config);
    config.parse_argv = 0;
    config.install_signal_handlers = 0;
    /* The stdlib is precompiled and mapped read-only; never try to write bytecode. */
    config.write_bytecode = 0;
    PyImport_AppendInittab("_wasmbridge", wasmbridge_init);
    PyStatus status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status)) {
        Py_ExitStatusException(status);
    }
    initialized = 1;
}

/* `source` compiled, once, into `*code`: the snapshot keeps the code of what every run does
 * (its initialization compiles it), instead of each run compiling it again. */
static PyObject *compiled(const char *source, PyObject **code) {
    if (*code == NULL) {
        *code = Py_CompileString(source, "<wasmbridge>", Py_file_input);
    }
    return *code;
}

/* Runs `source` in __main__ as PyRun_SimpleString does, from its compiled code. */
static int run_compiled(const char *source, PyObject **code) {
    PyObject *globals = PyModule_GetDict(PyImport_AddModule("__main__"));
    PyObject *result = compiled(source, code) ? PyEval_EvalCode(*code, globals, globals) : NULL;
    if (result == NULL) {
        PyErr_Print();
        return -1;
    }
    Py_DECREF(result);
    return 0;
}

/* What each run does before and after its script (see prepare_run and main). */
static const char PREPARE[] =
    /* PYTHONHOME moves the stdlib (mod_wasm configurations point it at the stdlib itself);
     * the snapshot's sys.path and its packages' __path__ have the build's. */
    "import os as _os, sys as _sys\n"
    "_home = _os.environ.get('PYTHONHOME')\n"
    "if _home and _home != _sys.prefix:\n"
    "    _v = 'python%d.%d' % _sys.version_info[:2]\n"
    "    _old = _os.path.join(_sys.prefix, 'lib', _v)\n"
    "    _new = _home if _os.path.exists(_os.path.join(_home, 'os.py'))\\\n"
    "        else _os.path.join(_home, 'lib', _v)\n"
    "    _sys.path[:] = [_new + p[len(_old):] if p.startswith(_old) else p\n"
    "                    for p in _sys.path if not p.endswith('.zip')]\n"
    "    for _m in list(_sys.modules.values()):\n"
    "        _p = getattr(_m, '__path__', None)\n"
    "        if type(_p) is list:\n"
    "            _p[:] = [_new + p[len(_old):] if p.startswith(_old) else p for p in _p]\n"
    "    _sys.prefix = _sys.exec_prefix = _home\n"
    "    del _m, _p\n"
    "_sys.path[1:1] = [p for p in _os.environ.get('PYTHONPATH', '').split(':')\n"
    "                  if p and p not in _sys.path]\n"
    "if 'random' in _sys.modules:\n"
    "    _sys.modules['random'].seed()\n"
    "del _os, _sys, _home\n";
/* What finalization would do that a script can see; the rest dies with the instance. */
static const char FINISH[] = "import atexit, sys\n"
                             "atexit._run_exitfuncs()\n"
                             "for stream in (sys.stdout, sys.stderr):\n"
                             "    try:\n"
                             "        stream.flush()\n"
                             "    except Exception:\n"
                             "        pass\n";
static PyObject *prepare_code, *finish_code;

/* Moves every object the snapshot holds out of the garbage collector's reach (gc.freeze), as
 * servers that fork a warmed interpreter do: a collection in a request would otherwise visit
 * the whole snapshot's heap and write to its pages, which each instance then copies. */
static void freeze(void) {
    if (PyRun_SimpleString("import gc\ngc.collect()\ngc.freeze()\n") != 0) {
        exit(1);
    }
}

__attribute__((export_name("wizer-initialize"))) void wizer_initialize(void) {
    __wasm_call_ctors();
    initialize();
    if (PyRun_SimpleString(PRELOAD) != 0) {
        exit(1);
    }
    compiled(PREPARE, &prepare_code);
    compiled(FINISH, &finish_code);
    freeze();
    /* wasi-libc reads the environment once; forget the build's, so each run reads its own. */
    __wasilibc_deinitialize_environ();
}

static int refresh_environ(void);
static int prepare_run(int argc, char **argv, const char *path0);

/* A second snapshot step (`wasmbridge wizer --init-func wasmbridge-warm`): imports what
 * PYTHON_WARM names (MODULE or MODULE:CALLABLE, separated by spaces or commas; the callable is
 * looked up too, so that a WSGI app object is made), with PYTHONPATH on sys.path, and leaves it
 * in the snapshot. A failure is printed and fails the step. */
__attribute__((export_name("wasmbridge-warm"))) void wasmbridge_warm(void) {
    __wasm_call_ctors();
    char *argv[] = {"python.wasm"};
    if (refresh_environ() != 0 || prepare_run(1, argv, "") != 0 ||
        PyRun_SimpleString("import os, wasmbridge_wsgi\n"
                           "wasmbridge_wsgi.warm(os.environ.get('PYTHON_WARM', ''))\n") != 0) {
        exit(1);
    }
    /* sys.path[0] was the run's; each run puts its own first again. */
    PyRun_SimpleString("import sys; del sys.path[0]\n");
    freeze();
    __wasilibc_deinitialize_environ();
}

/* os.environ and posix.environ were made at initialization: rebuild them from this run's. */
static int refresh_environ(void) {
    __wasilibc_ensure_environ();
    PyObject *data = PyDict_New();
    if (data == NULL) return -1;
    for (char **entry = environ; entry != NULL && *entry != NULL; entry++) {
        const char *eq = strchr(*entry, '=');
        if (eq == NULL) continue;
        PyObject *key = PyBytes_FromStringAndSize(*entry, eq - *entry);
        PyObject *value = PyBytes_FromString(eq + 1);
        int failed = key == NULL || value == NULL || PyDict_SetItem(data, key, value) < 0;
        Py_XDECREF(key);
        Py_XDECREF(value);
        if (failed) {
            Py_DECREF(data);
            return -1;
        }
    }
    PyObject *posix = PyImport_ImportModule("posix");
    PyObject *os = PyImport_ImportModule("os");
    PyObject *os_environ = os ? PyObject_GetAttrString(os, "environ") : NULL;
    PyObject *os_environb = os ? PyObject_GetAttrString(os, "environb") : NULL;
    PyObject *copy = PyDict_Copy(data);
    int result = (posix && os_environ && os_environb && copy &&
                  PyObject_SetAttrString(posix, "environ", copy) == 0 &&
                  PyObject_SetAttrString(os_environ, "_data", data) == 0 &&
                  PyObject_SetAttrString(os_environb, "_data", data) == 0)
                     ? 0
                     : -1;
    Py_XDECREF(copy);
    Py_XDECREF(os_environb);
    Py_XDECREF(os_environ);
    Py_XDECREF(os);
    Py_XDECREF(posix);
    Py_DECREF(data);
    return result;
}

/* sys.argv, sys.path[0] (the script's directory, or '' for -c and -m) and PYTHONPATH, as
 * `python` sets them at start-up; then a new seed, or every run would draw the same numbers. */
static int prepare_run(int argc, char **argv, const char *path0) {
    PyObject *sys_argv = PyList_New(0);
    if (sys_argv == NULL) return -1;
    for (int i = 0; i < argc; i++) {
        PyObject *arg = PyUnicode_DecodeFSDefault(argv[i]);
        if (arg == NULL || PyList_Append(sys_argv, arg) < 0) {
            Py_XDECREF(arg);
            Py_DECREF(sys_argv);
            return -1;
        }
        Py_DECREF(arg);
    }
    int failed = PySys_SetObject("argv", sys_argv) < 0;
    Py_DECREF(sys_argv);
    if (failed) return -1;

    PyObject *sys_path = PySys_GetObject("path"); /* borrowed */
    PyObject *dir = PyUnicode_DecodeFSDefault(path0);
    if (sys_path == NULL || dir == NULL || PyList_Insert(sys_path, 0, dir) < 0) {
        Py_XDECREF(dir);
        return -1;
    }
    Py_DECREF(dir);
    return run_compiled(PREPARE, &prepare_code);
}

/* The exit status of a run that returned `result` (NULL: it raised). */
static int exit_status(PyObject *result) {
    if (result != NULL) {
        Py_DECREF(result);
        return 0;
    }
    int status = 1;
    if (PyErr_ExceptionMatches(PyExc_SystemExit)) {
        _Py_HandleSystemExit(&status);
    } else {
        PyErr_Print();
    }
    return status;
}

/* Runs the file `path` as __main__, as `python SCRIPT` does. */
static PyObject *run_file(const char *path) {
    PyObject *globals = PyModule_GetDict(PyImport_AddModule("__main__"));
    FILE *file = fopen(path, "rb");
    if (file == NULL) {
        return PyErr_Format(PyExc_SystemExit, "python: can't open file '%s': [Errno %d] %s",
                            path, errno, strerror(errno));
    }
    PyObject *file_name = PyUnicode_DecodeFSDefault(path);
    if (file_name == NULL || PyDict_SetItemString(globals, "__file__", file_name) < 0) {
        Py_XDECREF(file_name);
        fclose(file);
        return NULL;
    }
    Py_DECREF(file_name);
    return PyRun_FileExFlags(file, path, Py_file_input, globals, globals, 1, NULL);
}

int main(int argc, char **argv) {
    __wasm_call_ctors();
    if (!initialized) {
        initialize();
    }
    int option = argc > 1 && argv[1][0] == '-';
    int wsgi = option && strcmp(argv[1], "--wsgi") == 0;
    if (argc < 2 || (wsgi && argc != 3) ||
        (option && !wsgi && (argc < 3 || (strcmp(argv[1], "-c") && strcmp(argv[1], "-m"))))) {
        fprintf(stderr, "usage: python.wasm SCRIPT [ARG...] | -c CODE [ARG...] | -m MODULE [ARG...]"
                        " | --wsgi MODULE:CALLABLE\n");
        return 2;
    }

    PyObject *result = NULL;
    if (refresh_environ() == 0) {
        if (wsgi) {
            /* sys.argv as under mod_wsgi: the server's name only. */
            char *server[] = {"wasmbridge"};
            if (prepare_run(1, server, "") == 0) {
                PyObject *gateway = PyImport_ImportModule("wasmbridge_wsgi");
                result = gateway ? PyObject_CallMethod(gateway, "main", "s", argv[2]) : NULL;
                Py_XDECREF(gateway);
                /* main returns the exit status. */
                if (result != NULL && PyLong_Check(result) && PyLong_AsLong(result) != 0) {
                    PyErr_SetObject(PyExc_SystemExit, result);
                    Py_DECREF(result);
                    result = NULL;
                }
            }
        } else if (!option) {
            char *script_dir = strdup(argv[1]);
            if (prepare_run(argc - 1, argv + 1, dirname(script_dir)) == 0) {
                result = run_file(argv[1]);
            }
            free(script_dir);
        } else {
            /* sys.argv[0] is the option, as with `python -c`; runpy replaces it for -m. */
            const char *what = argv[2];
            argv[2] = argv[1];
            if (prepare_run(argc - 2, argv + 2, "") == 0) {
                if (strcmp(argv[1], "-c") == 0) {
                    PyObject *globals = PyModule_GetDict(PyImport_AddModule("__main__"));
                    result = PyRun_StringFlags(what, Py_file_input, globals, globals, NULL);
                } else {
                    PyObject *runpy = PyImport_ImportModule("runpy");
                    result = runpy ? PyObject_CallMethod(runpy, "_run_module_as_main", "s", what)
                                   : NULL;
                    Py_XDECREF(runpy);
                }
            }
        }
    }
    int status = exit_status(result);

    run_compiled(FINISH, &finish_code);
    return status;
}
