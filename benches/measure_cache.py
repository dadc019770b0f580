# Memory per stored response and disk-tier throughput of the cache example (docs/performance.md,
# "The cache"): python3 benches/measure_cache.py target/release/examples/cache, with an nginx
# origin on 127.0.0.1:8001 serving /small (13 bytes) and /32k (32 KiB); uses /tmp/cdisk.
import http.client, subprocess, time, re, sys, os, shutil
BIN = sys.argv[1]
shutil.rmtree('/tmp/cdisk', ignore_errors=True)
open('/tmp/cm.toml','w').write('[proxy.CachedSite.cache]\nttl = "1h"\nmemory = "512MiB"\nmax_object = "16MiB"\ndisk = "/tmp/cdisk"\ndisk_size = "2GiB"\n')
p = subprocess.Popen([BIN, '--threads', '1', '--listen', '127.0.0.1:6188', '--upstream', '127.0.0.1:8001', '-c', '/tmp/cm.toml'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
def rss():
    for l in open(f'/proc/{p.pid}/status'):
        if l.startswith('VmRSS'): return int(l.split()[1])
def metric(name):
    c = http.client.HTTPConnection('127.0.0.1', 9100, timeout=10); c.request('GET', '/metrics'); t = c.getresponse().read().decode()
    m = re.search(r'^' + name + r'\{[^}]*\} (\S+)', t, re.M)
    return float(m.group(1)) if m else None
for _ in range(100):
    try:
        c = http.client.HTTPConnection('127.0.0.1', 6188, timeout=10); c.request('GET', '/small?warm'); c.getresponse().read(); break
    except Exception: time.sleep(0.1)
def fetch(path, n):
    c = http.client.HTTPConnection('127.0.0.1', 6188, timeout=30)
    for i in range(n):
        c.request('GET', f'{path}?i={i}'); r = c.getresponse(); r.read(); assert r.status == 200
time.sleep(0.5)
r0 = rss(); b0 = metric('pingora_dsl_cache_bytes')
N = 10000
fetch('/small', N)
time.sleep(0.5)
r1 = rss(); b1 = metric('pingora_dsl_cache_bytes'); o1 = metric('pingora_dsl_cache_objects')
print(f'small objects: {N}, RSS +{(r1-r0)} KiB = {(r1-r0)*1024/N:.0f} B/object; cache gauge {b1-b0:.0f} B = {(b1-b0)/N:.0f} B/object; objects {o1:.0f}')
d0 = metric('pingora_dsl_cache_disk_objects')
M = 2000
t0 = time.time()
fetch('/32k', M)
t1 = time.time()
while metric('pingora_dsl_cache_disk_objects') < d0 + M and time.time() - t0 < 120: time.sleep(0.05)
t2 = time.time()
db = metric('pingora_dsl_cache_disk_bytes')
print(f'32 KiB objects: {M} fetched in {t1-t0:.2f} s; all on disk after {t2-t0:.2f} s: {M*32/1024/(t2-t0):.1f} MiB/s of bodies written; disk bytes {db/1048576:.1f} MiB')
# hits from disk after a restart
p.terminate(); p.wait()
p = subprocess.Popen([BIN, '--threads', '1', '--listen', '127.0.0.1:6188', '--upstream', '127.0.0.1:8001', '-c', '/tmp/cm.toml'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
for _ in range(100):
    try:
        c = http.client.HTTPConnection('127.0.0.1', 6188, timeout=10); c.request('GET', '/small?warm2'); c.getresponse().read(); break
    except Exception: time.sleep(0.1)
t0 = time.time(); fetch('/32k', M); t1 = time.time()
loads = metric('pingora_dsl_cache_disk_loads_total')
print(f'after a restart: {M} 32 KiB objects read back from disk in {t1-t0:.2f} s ({M/(t1-t0):.0f}/s, {M*32/1024/(t1-t0):.1f} MiB/s), disk loads {loads:.0f}')
p.terminate(); p.wait()
